"""The endpoint against a corpus of bad inputs: each refused (4xx) or served at a bounded cost,
never a 5xx, never a crash, and the server's peak RSS within its idle RSS plus a budget.

A tiny-preset model served on loopback by `interactavatar serve` with the default limits (but a 5 s
body timeout, so that stalled bodies do not take a minute each), as a subprocess (the serving
tests' `RunningServer`). The corpus is issue #16's findings and their neighbours: headers that
declare far more than their size (a 4 MHz WAV, 1024 x 1024 pose videos, images of 20000 x 20000),
media that are not what they claim, the largest inputs the limits allow, malformed v1 and v2
bodies, a PNG as the pose video, bodies that stall, clients that walk away mid-generation, a burst
from one client, the model repository API.

Memory: idle is the server's VmRSS after one good generation (so the model's first-use buffers
count as idle). Before each case the kernel's high-water mark (VmHWM) is reset through
/proc/PID/clear_refs, and read after it: each case's peak above idle; the headline is the worst.
A server that dies or stops answering its readiness probe counts a crash and is restarted.

    python -m benchmarks.bench_fuzz [--quick]
"""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import numpy as np
from PIL import Image

from benchmarks.summary import MISSED, headline
from tests.helpers.media import mp4_bytes, nan_wav, png_bytes, png_header_only, wav_bytes, with_declared_rate
from tests.helpers.model_server import RunningServer, read_response

PRESET = "tiny"
BUDGET_MB = 512
BODY_TIMEOUT_S = 5
TITLE = "Endpoint reliability: a fuzz corpus of bad inputs (tiny preset, CPU)"
V1 = "/v1/models/interactavatar:predict"
V2 = "/v2/models/interactavatar/infer"
RUNNING, WAITING = "interactavatar_generations_running", "interactavatar_generations_waiting"
CANCELLED, COMPLETED = ('interactavatar_generations_total{outcome="cancelled"}',
                        'interactavatar_generations_total{outcome="completed"}')
WALKED_AWAY = None  # the status of a request whose client left before the answer


@dataclass
class Case:
    """A bad input: what it is, what the server should do with it (refused: every answer 4xx;
    served: 2xx; busy: 2xx or 429; cancelled: the generation stopped, nothing answered), and how to
    send it (server -> the statuses of the requests it made). `quick`: also in the quick run."""

    name: str
    expect: str
    send: Callable[[RunningServer], list]
    quick: bool = True


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD = {"image": png_bytes(), "audio": wav_bytes()}


def v1(server: RunningServer, steps: int = 2, options: dict | None = None, text: str = "The man waves",
       **media) -> list:
    """A v1 request: the good image and speech unless replaced (bytes are sent base64, anything
    else as it is), a text, 2 steps."""
    instance = {name: b64(value) if isinstance(value, bytes) else value for name, value in (GOOD | media).items()}
    body = {"instances": [instance | {"text": text, "options": {"steps": steps} | (options or {})}]}
    return [httpx.post(server.url + V1, json=body, timeout=300).status_code]


def v2_binary(server: RunningServer, inputs: list[dict], payload: bytes) -> list:
    """A v2 binary request: the JSON header of `inputs`, then `payload`."""
    header = json.dumps({"inputs": inputs}).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return [httpx.post(server.url + V2, content=header + payload, headers=headers, timeout=300).status_code]


def binary_inputs(media: dict[str, bytes], **shapes) -> tuple[list[dict], bytes]:
    """Header inputs and payload for BYTES tensors sent binary (shape [1] unless given)."""
    inputs, payload = [], b""
    for name, data in media.items():
        element = struct.pack("<I", len(data)) + data
        inputs.append({"name": name, "shape": shapes.get(name, [1]), "datatype": "BYTES",
                       "parameters": {"binary_data_size": len(element)}})
        payload += element
    return inputs, payload


def raw(server: RunningServer, path: str, content: bytes, headers: dict | None = None) -> list:
    return [httpx.post(server.url + path, content=content, headers=headers or {}, timeout=60).status_code]


def v2_header(server: RunningServer, header: bytes) -> list:
    """A v2 binary request that is all header (its Inference-Header-Content-Length says so)."""
    return raw(server, V2, header, {"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(header))})


def declaring_length(server: RunningServer, length: int) -> list:
    """Headers declaring a body of `length` bytes, and two bytes of it (raw: an HTTP client would
    not send a body shorter than its Content-Length)."""
    head = (f"POST {V1} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n{{}}").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
        connection.sendall(head)
        return [read_response(connection)[0]]


def flac_declaring(total_samples: int) -> bytes:
    """A half-second FLAC whose STREAMINFO declares `total_samples` (36 bits) instead."""
    data = bytearray(wav_bytes(0.5, 16000, format="FLAC"))
    info = 8  # "fLaC", then the STREAMINFO block's 4-byte header
    data[info + 13] = (data[info + 13] & 0xF0) | (total_samples >> 32 & 0x0F)
    struct.pack_into(">I", data, info + 14, total_samples & 0xFFFFFFFF)
    return bytes(data)


def image_bytes(height: int, width: int, format: str = "PNG") -> bytes:
    """A flat grey image: tiny compressed, full size decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, format=format)
    return buffer.getvalue()


def jpeg_declaring(height: int, width: int) -> bytes:
    """A small JPEG whose frame header (SOF0) declares height x width."""
    data = bytearray(image_bytes(16, 16, "JPEG"))
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def mjpeg_mp4() -> bytes:
    """An mp4 holding motion JPEG frames: a container we read, a codec we do not."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuvj420p"
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def mp4_declaring_frames(frames: int) -> bytes:
    """A 9-frame mp4 whose sample table (stts) declares `frames` frames."""
    data = bytearray(mp4_bytes(9, 64, 64))
    struct.pack_into(">I", data, data.index(b"stts") + 12, frames)
    return bytes(data)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def stalled_bodies(count: int) -> Callable[[RunningServer], list]:
    """`count` requests from one client that send half their body and stop."""

    def send(server: RunningServer) -> list:
        body = json.dumps({"instances": [{"image": b64(GOOD["image"]), "audio": b64(GOOD["audio"]),
                                          "text": "x"}]}).encode()
        connections = [server.send_raw(V1, body, {"Content-Type": "application/json"}, send_bytes=len(body) // 2)
                       for _ in range(count)]
        statuses = []
        for connection in connections:
            statuses.append(read_response(connection)[0])
            connection.close()
        return statuses

    return send


def walk_away(count: int) -> Callable[[RunningServer], list]:
    """`count` long generations (one running, the rest queued) whose clients leave; answered as
    expected when exactly the running one was cancelled and none completed."""

    def send(server: RunningServer) -> list:
        before = server.metrics()
        body = json.dumps({"instances": [{"image": b64(GOOD["image"]), "audio": b64(GOOD["audio"]), "text": "x",
                                          "options": {"steps": 200}}]}).encode()
        connections = [server.send_raw(V1, body, {"Content-Type": "application/json"}) for _ in range(count)]
        server.wait_for_metrics(lambda m: m[RUNNING] == 1 and m[WAITING] == count - 1, "all admitted")
        for connection in connections:
            connection.close()
        after = server.wait_for_metrics(lambda m: m[RUNNING] == 0 and m[WAITING] == 0, "all places freed")
        stopped = (after.get(CANCELLED, 0) - before.get(CANCELLED, 0) == 1
                   and after.get(COMPLETED, 0) == before.get(COMPLETED, 0))
        return [WALKED_AWAY] * count if stopped else [200]

    return send


def burst(count: int) -> Callable[[RunningServer], list]:
    """`count` good requests at once from one client: served up to its share, the rest 429."""

    def send(server: RunningServer) -> list:
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.extend(v1(server, steps=20))) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return statuses

    return send


def corpus() -> list[Case]:
    """The bad inputs, cheapest first within each kind; media are built when a case is sent."""
    wav = wav_bytes
    return [
        # Speech whose header declares the cost.
        Case("WAV declaring 4 MHz (167 KB, the issue's)", "refused",
             lambda s: v1(s, audio=with_declared_rate(wav(5.2, 16000), 4_000_000))),
        Case("WAV declaring 4,000,001 Hz", "refused", lambda s: v1(s, audio=with_declared_rate(wav(1, 16000), 4_000_001))),
        Case("WAV at 44,101 Hz (odd rate, bounded resampler)", "served", lambda s: v1(s, audio=wav(2, 44101))),
        Case("WAV with 9 channels", "refused", lambda s: v1(s, audio=wav(0.5, 16000, channels=9))),
        Case("WAV header claiming an hour (data: 0.5 s)", "served", lambda s: v1(s, audio=_claims_an_hour())),
        Case("FLAC declaring 2^36 samples", "refused", lambda s: v1(s, audio=flac_declaring(2**36 - 1))),
        Case("FLAC declaring 100 samples (holds 8000)", "refused", lambda s: v1(s, audio=flac_declaring(100))),
        Case("float WAV of NaN", "refused", lambda s: v1(s, audio=nan_wav())),
        Case("AIFF", "refused", lambda s: v1(s, audio=wav(0.5, 16000, format="AIFF"))),
        Case("PNG as audio", "refused", lambda s: v1(s, audio=png_bytes())),
        Case("largest WAV the body allows (63 MB: 8 ch x 192 kHz x 20 s), v2 binary", "served",
             lambda s: v2_binary(s, *binary_inputs({"image": GOOD["image"], "audio": wav(20, 192000, channels=8),
                                                    "text": b"x"})), quick=False),
        # Images.
        Case("PNG header claiming 20000 x 20000", "refused", lambda s: v1(s, image=png_header_only(20000, 20000))),
        Case("JPEG declaring 65000 x 65000", "refused", lambda s: v1(s, image=jpeg_declaring(65000, 65000))),
        Case("1 x 4096 image (would ask for a video 1M pixels wide)", "refused", lambda s: v1(s, image=image_bytes(1, 4096))),
        Case("truncated PNG", "refused", lambda s: v1(s, image=png_bytes()[:300])),
        Case("three 4096 x 4096 images (the pixel limit), flat PNG", "served",
             lambda s: v1(s, image=image_bytes(4096, 4096), object_image=image_bytes(4096, 4096),
                          pose_image=image_bytes(4096, 4096)), quick=False),
        # Pose videos.
        Case("pose mp4 1024 x 1024, 40 frames", "served",
             lambda s: v1(s, pose_video=mp4_bytes(40, 1024, 1024), options={"mode": "pose"})),
        Case("pose mp4 1024 x 1024, 257 frames (the issue's)", "served",
             lambda s: v1(s, pose_video=mp4_bytes(257, 1024, 1024), options={"mode": "pose"}), quick=False),
        Case("pose mp4 2048 x 2048 (the pixel limit), 30 frames", "served",
             lambda s: v1(s, pose_video=mp4_bytes(30, 2048, 2048), options={"mode": "pose"}), quick=False),
        Case("pose mp4 2050 x 2050", "refused", lambda s: v1(s, pose_video=mp4_bytes(2, 2050, 2050), options={"mode": "pose"})),
        Case("pose mp4 declaring 2^31 frames", "refused",
             lambda s: v1(s, pose_video=mp4_declaring_frames(2**31 - 16), options={"mode": "pose"})),
        Case("PNG as the pose video", "refused", lambda s: v1(s, pose_video=png_bytes(), options={"mode": "pose"})),
        Case("motion JPEG in mp4 as the pose video", "refused", lambda s: v1(s, pose_video=mjpeg_mp4(), options={"mode": "pose"})),
        Case("random bytes as the pose video", "refused",
             lambda s: v1(s, pose_video=np.random.default_rng(0).bytes(4096), options={"mode": "pose"})),
        # v2 bodies.
        Case("v2 element length prefix past the data", "refused",
             lambda s: v2_binary(s, *_lying_prefix(+1000))),
        Case("v2 element length prefix short of the data", "refused", lambda s: v2_binary(s, *_lying_prefix(-10))),
        Case("v2 shape [1.0]", "refused",
             lambda s: v2_binary(s, *binary_inputs(GOOD | {"text": b"x"}, image=[1.0]))),
        Case("v2 shape [1, 1, 1]", "refused",
             lambda s: v2_binary(s, *binary_inputs(GOOD | {"text": b"x"}, audio=[1, 1, 1]))),
        Case("v2 shape [16000000]", "refused",
             lambda s: v2_binary(s, *binary_inputs(GOOD | {"text": b"x"}, text=[16_000_000]))),
        Case("v2 header length 10^12", "refused",
             lambda s: raw(s, V2, b'{"inputs": []}', {"Inference-Header-Content-Length": str(10**12),
                                                      "Content-Type": "application/octet-stream"})),
        Case("v2 header nested 100,000 deep", "refused", lambda s: v2_header(s, nested(100_000).encode())),
        Case("v2 parameters a string", "refused",
             lambda s: v2_header(s, json.dumps({"inputs": [], "parameters": "x"}).encode())),
        # v1 bodies and options.
        Case("v1 options nested 100,000 deep", "refused", lambda s: raw(s, V1, _v1_nested_options(100_000),
                                                                        {"Content-Type": "application/json"})),
        Case("face box outside the image", "refused", lambda s: v1(s, options={"face_box": [10, 10, 500, 40]})),
        Case("num_frames 257 on a 5-frame model", "refused", lambda s: v1(s, options={"num_frames": 257})),
        Case("steps 10^9", "refused", lambda s: v1(s, options={"steps": 10**9})),
        Case("a text of a million characters", "refused", lambda s: v1(s, text="a" * 1_000_000)),
        Case("base64 that is not", "refused", lambda s: v1(s, image="!!not base64!!")),
        Case("body declaring 10^12 bytes", "refused", lambda s: declaring_length(s, 10**12)),
        Case("chunked body over the limit (65 MB)", "refused",
             lambda s: [httpx.post(s.url + V1, content=(b"x" * 2**20 for _ in range(65)), timeout=60).status_code]),
        Case("another model's name", "refused",
             lambda s: [httpx.post(s.url + "/v1/models/other:predict", json={}, timeout=30).status_code]),
        Case("model repository unload", "refused",
             lambda s: [httpx.post(s.url + "/v2/repository/models/interactavatar/unload", timeout=30).status_code]),
        Case("explain, and a model version (kserve routes not offered)", "refused",
             lambda s: [httpx.post(s.url + "/v1/models/interactavatar:explain", json={}, timeout=30).status_code,
                        httpx.get(s.url + "/v2/models/interactavatar/versions/1/ready", timeout=30).status_code]),
        # Connections.
        Case("12 stalled bodies from one client", "refused", stalled_bodies(12), quick=False),
        Case("3 stalled bodies from one client", "refused", stalled_bodies(3)),
        Case("3 clients walking away mid-generation", "cancelled", walk_away(3)),
        Case("8 requests at once from one client", "busy", burst(8), quick=False),
    ]


def _claims_an_hour() -> bytes:
    data = bytearray(wav_bytes(0.5, 16000))
    struct.pack_into("<I", data, data.index(b"data") + 4, 16000 * 2 * 3600)
    return bytes(data)


def _lying_prefix(error: int) -> tuple[list[dict], bytes]:
    inputs, payload = binary_inputs(GOOD | {"text": b"x"})
    return inputs, struct.pack("<I", len(GOOD["image"]) + error) + payload[4:]


def _v1_nested_options(depth: int) -> bytes:
    instance = {"image": b64(GOOD["image"]), "audio": b64(GOOD["audio"]), "text": "x"}
    return json.dumps({"instances": [instance]})[:-2].encode() + b', "options": ' + nested(depth).encode() + b"}]}"


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status: no {field}")


def _reset_peak(pid: int) -> None:
    """Lowers the process's VmHWM to its current RSS (Linux: 5 > /proc/PID/clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _start(model_dir: Path, folder: Path) -> tuple[RunningServer, float]:
    """A ready server and its idle RSS in MB, after one good generation."""
    server = RunningServer(model_dir, folder / f"server-{len(list(folder.glob('server-*')))}.log",
                           "--body-timeout-s", str(BODY_TIMEOUT_S))
    server.wait_ready(300)
    if v1(server) != [200]:
        raise RuntimeError(f"the warm-up request failed:\n{server.log_path.read_text()[-3000:]}")
    return server, _status_kb(server.process.pid, "VmRSS") / 1024


def _alive(server: RunningServer) -> bool:
    if server.process.poll() is not None:
        return False
    try:
        return httpx.get(server.url + "/v2/health/ready", timeout=30).status_code == 200
    except httpx.TransportError:
        return False


def _as_expected(expect: str, statuses: list) -> bool:
    if expect == "cancelled":
        return all(status is WALKED_AWAY for status in statuses)
    if not all(isinstance(status, int) for status in statuses):
        return False
    allowed = {"refused": lambda s: 400 <= s < 500, "served": lambda s: 200 <= s < 300,
               "busy": lambda s: 200 <= s < 300 or s == 429}[expect]
    return all(allowed(status) for status in statuses)


def _statuses_text(statuses: list) -> str:
    counts = Counter("walked away" if status is WALKED_AWAY else str(status) for status in statuses)
    return ", ".join(f"{status} x{count}" if count > 1 else status for status, count in sorted(counts.items()))


def run(quick: bool = False, budget_mb: float = BUDGET_MB) -> dict:
    from interactavatar.model.bundle import init_model_directory

    cases = [case for case in corpus() if case.quick or not quick]
    rows, crashes, all_statuses = [], 0, []
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as scratch:
        scratch = Path(scratch)
        model_dir = init_model_directory(PRESET, scratch / "model")
        server, idle_mb = _start(model_dir, scratch)
        first_idle_mb = idle_mb
        try:
            for case in cases:
                _reset_peak(server.process.pid)
                try:
                    statuses = case.send(server)
                except httpx.TransportError as err:  # the server went away under the request
                    statuses = [f"no answer ({type(err).__name__})"]
                peak_mb = _status_kb(server.process.pid, "VmHWM") / 1024 if server.process.poll() is None else None
                crashed = not _alive(server)
                rows.append({"case": case.name, "expected": case.expect, "answers": _statuses_text(statuses),
                             "as expected": "yes" if _as_expected(case.expect, statuses) and not crashed else "NO",
                             "peak MB above idle": "crashed" if peak_mb is None else round(peak_mb - idle_mb),
                             "crashed": "YES" if crashed else "no"})
                all_statuses += statuses
                if crashed:
                    crashes += 1
                    server.stop()
                    server, idle_mb = _start(model_dir, scratch)
        finally:
            server.stop()
    numeric = [status for status in all_statuses if isinstance(status, int)]
    five_xx = sum(status >= 500 for status in numeric)
    refused = sum(400 <= status < 500 for status in numeric)
    peaks = [row["peak MB above idle"] for row in rows if isinstance(row["peak MB above idle"], int)]
    peak = max(peaks, default=0)
    unanswered = len(all_statuses) - len(numeric) - all_statuses.count(WALKED_AWAY)
    clean = five_xx == 0 and crashes == 0 and unanswered == 0
    latest_text = (f"+{peak} MB peak over idle (budget {budget_mb:g}); {five_xx} 5xx, {crashes} crashes; "
                   f"{refused} of {len(all_statuses)} bad requests refused (4xx)")
    return {
        "title": TITLE,
        "goal": f"no 5xx, no crash, peak RSS <= idle + {budget_mb:g} MB across the corpus",
        "summary": headline("Endpoint under a fuzz corpus (peak RSS above idle, MB)",
                            f"no 5xx, no crash, peak RSS <= idle + {budget_mb:g} MB", latest=peak,
                            latest_text=latest_text, target=budget_mb if clean else None,
                            verdict_text=None if clean else MISSED),
        "rows": rows,
        "notes": [
            "answers: the HTTP statuses the case's requests got; walked away: the client left on purpose and the "
            "server cancelled the generation (checked on its metrics: one cancelled, none completed)",
            "served cases are inputs the limits allow at their largest or oddest; they must be served, at a "
            "bounded cost",
            f"server: `interactavatar serve --model <tiny> --body-timeout-s {BODY_TIMEOUT_S}`, other limits at "
            "their defaults (64 MB bodies, 60 s of speech, 4096 x 4096 images, 2048 x 2048 pose videos, one "
            "generation running, four queued, four per client)",
        ],
        "preset": PRESET,
        "cases": len(rows),
        "bad_requests_tried": len(all_statuses),
        "responses_5xx": five_xx,
        "crashes": crashes,
        "unanswered": unanswered,
        "refused_4xx": refused,
        "served_2xx": sum(200 <= status < 300 for status in numeric),
        "walked_away": all_statuses.count(WALKED_AWAY),
        "idle_rss_mb": round(first_idle_mb),
        "peak_rss_above_idle_mb": peak,
        "budget_mb": budget_mb,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
