"""The KServe endpoint against the same generation in-process (target: at most 1.05x).

A demo-preset model with few sampling steps, so that generation, not HTTP, dominates as it does
at paper size. In-process means what the endpoint does for a request: the pipeline call and the
mp4 encode; the endpoint adds the v2 request (binary tensors), parsing, queueing and the response.
Rounds alternate the two (benchmarks/timing.py). Then 4 clients at once against one generation
slot give p50/p95 latency, and the server process's peak RSS (VmHWM) bounds its memory.
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from benchmarks.summary import headline, ratio_text
from benchmarks.timing import interleaved, median_ms, ratio

PRESET = "demo"
CLIENTS = 4
TARGET = 1.05
TITLE = "KServe endpoint vs the same generation in-process (demo preset, CPU)"


def _inputs() -> tuple[bytes, bytes]:
    rng = np.random.default_rng(0)
    image = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (180, 240, 3), dtype=np.uint8)).save(image, format="PNG")
    speech = io.BytesIO()
    t = np.arange(16000) / 16000
    soundfile.write(speech, 0.3 * np.sin(2 * np.pi * 180 * t), 16000, format="WAV")
    return image.getvalue(), speech.getvalue()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(quick: bool = False) -> dict:
    from interactavatar.inference.client import EndpointClient
    from interactavatar.inference.pipeline import InteractAvatarPipeline
    from interactavatar.io.media import load_image, load_speech
    from interactavatar.model.bundle import init_model_directory
    from interactavatar.train.engine import free_port

    steps, repeats, per_client = (4, 2, 1) if quick else (8, 5, 2)
    image, speech = _inputs()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        scratch = Path(scratch)
        model_dir = init_model_directory(PRESET, scratch / "model")
        port = free_port()
        log = open(scratch / "server.log", "wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "interactavatar.cli", "serve", "--model", str(model_dir), "--port", str(port),
             "--max-concurrency", "1", "--max-queue", str(CLIENTS * per_client)],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"},
        )
        try:
            client = EndpointClient(f"http://127.0.0.1:{port}")
            client.wait_ready(180)
            pipeline = InteractAvatarPipeline.from_pretrained(model_dir)
            (scratch / "ref.png").write_bytes(image)
            (scratch / "speech.wav").write_bytes(speech)
            image_array = load_image(scratch / "ref.png")
            waveform = load_speech(scratch / "speech.wav")
            options = {"steps": steps, "seed": 0}

            def in_process():
                result = pipeline(image_array, "The man lifts the red cup", waveform, **options)
                result.save(scratch / "local.mp4")

            def endpoint():
                client.generate(image, speech, "The man lifts the red cup", options)

            # The predictor generates in a worker thread; the same in-process call from a worker
            # thread separates the serving overhead from any main-thread/worker-thread difference.
            worker = ThreadPoolExecutor(1)
            times = interleaved({"endpoint": endpoint, "in_process": in_process,
                                 "in_process_worker": lambda: worker.submit(in_process).result()},
                                repeats=repeats, warmup=1)
            # Wall time only: the endpoint's CPU time is spent in another process.
            single = {f"{name}_ms": ms for name, ms in median_ms(times).items()}
            single["ratio"] = ratio(times, "endpoint", "in_process")
            single["ratio_vs_worker_thread"] = ratio(times, "endpoint", "in_process_worker")

            latencies: list[float] = []

            def one_client():
                own = EndpointClient(client.url)
                for _ in range(per_client):
                    started = time.perf_counter()
                    own.generate(image, speech, "The man lifts the red cup", options)
                    latencies.append(time.perf_counter() - started)

            started = time.perf_counter()
            threads = [threading.Thread(target=one_client) for _ in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            quantiles = statistics.quantiles(latencies, n=20, method="inclusive")
            return {
                "title": TITLE,
                "goal": f"ratio (endpoint / in-process) <= {TARGET}",
                "summary": headline(
                    "KServe endpoint vs in-process generation", f"endpoint / in-process <= {TARGET}",
                    latest=single["ratio"]["median"], latest_text=ratio_text(single["ratio"]), target=TARGET),
                "preset": PRESET,
                "steps": steps,
                **single,
                "target_ratio": TARGET,
                "concurrent_clients": CLIENTS,
                "concurrent_requests": len(latencies),
                "p50_s": round(statistics.median(latencies), 3),
                "p95_s": round(quantiles[18], 3),
                "throughput_per_min": round(60 * len(latencies) / wall, 2),
                "server_peak_rss_mb": round(_peak_rss_mb(server.pid), 1),
            }
        finally:
            server.terminate()
            server.wait(30)
            log.close()


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
