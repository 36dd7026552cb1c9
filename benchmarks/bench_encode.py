"""The dataset's exact encode without x264's macroblock tree vs with it (its default).

Exact encodes must give the same bytes for the same frames (DVC hashes them), but x264's
macroblock tree reads memory it never wrote, so with it on the bytes follow the heap's leftovers:
each setting is encoded in child processes under several `MALLOC_PERTURB_` fillings and the
distinct outputs are counted. The price of turning it off is measured on synthetic clips at the
demo size and at the paper's 480x832: file size and PSNR against the frames encoded (both at
crf 12), and encode time (interleaved rounds, wall and CPU clocks).

    python -m benchmarks.bench_encode [--repeats N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.summary import headline, ratio_text
from benchmarks.timing import interleaved, median_ms, ratio
from interactavatar.config import preset
from interactavatar.data.synth import SynthSpec, synthesize
from interactavatar.io import media
from interactavatar.io.media import encode_video, read_video

PERTURB_BYTES = (0, 1, 85, 170, 7)
FPS = 25


def encode_with_mbtree(frames: np.ndarray) -> bytes:
    """The reference: our exact encode with the one setting changed, x264's macroblock tree on."""
    with mock.patch.object(media, "EXACT_X264_OPTIONS", {}):
        return encode_ours(frames)


def encode_ours(frames: np.ndarray) -> bytes:
    return encode_video(frames, FPS, exact=True)


ENCODERS = {"ours": encode_ours, "mbtree": encode_with_mbtree}


def psnr(frames: np.ndarray, encoded: bytes) -> float:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(encoded)
        handle.flush()
        decoded = read_video(handle.name)[0]
    mse = np.mean((decoded.astype(np.float64) - frames.astype(np.float64)) ** 2)
    return round(float(10 * np.log10(255.0**2 / mse)), 2)


def distinct_outputs(clips: Path, encoder: str) -> int:
    """How many different byte strings `encoder` gives for the same clips across heap fillings."""
    digests = set()
    for byte in PERTURB_BYTES:
        env = os.environ | {"MALLOC_PERTURB_": str(byte)}
        command = [sys.executable, "-m", "benchmarks.bench_encode", "--digest", str(clips), "--encoder", encoder]
        digests.add(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout.strip())
    return len(digests)


def digest(clips: Path, encoder: str) -> str:
    hashes = hashlib.sha256()
    for video in sorted(clips.glob("*/video.mp4")):
        hashes.update(ENCODERS[encoder](read_video(video)[0]))
    return hashes.hexdigest()


def run(repeats: int = 5, quick: bool = False) -> dict:
    if quick:
        repeats = 1
    demo = SynthSpec.from_config(preset("demo"))
    sizes = {f"demo {demo.width}x{demo.height}": demo,
             "paper 832x480": SynthSpec(width=832, height=480, num_frames=9 if quick else 33)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as scratch:
        for name, spec in sizes.items():
            clips = Path(scratch) / name.split()[0]
            synthesize(clips, 1 if quick else 2, seed=0, spec=spec)
            frames = read_video(next(clips.glob("*/video.mp4")))[0]
            encoded = {encoder: fn(frames) for encoder, fn in ENCODERS.items()}
            times = interleaved({encoder: lambda fn=fn, frames=frames: fn(frames) for encoder, fn in ENCODERS.items()},
                                repeats=repeats, warmup=1)
            rows.append({
                "size": name, "frames": len(frames),
                "kB ours / mbtree": f"{len(encoded['ours']) / 1e3:.1f} / {len(encoded['mbtree']) / 1e3:.1f}",
                "size ratio": round(len(encoded["ours"]) / len(encoded["mbtree"]), 3),
                "PSNR dB ours / mbtree": f"{psnr(frames, encoded['ours'])} / {psnr(frames, encoded['mbtree'])}",
                "ms ours / mbtree": " / ".join(str(value) for value in median_ms(times).values()),
                "time ratio": ratio(times, "ours", "mbtree"),
                "time ratio CPU": ratio(times, "ours", "mbtree", clock="cpu"),
                "distinct outputs over heap fillings ours / mbtree":
                    f"{distinct_outputs(clips, 'ours')} / {distinct_outputs(clips, 'mbtree')}",
            })
    worst = max(rows, key=lambda row: row["size ratio"])
    return {
        "title": "Exact (dataset) encode: x264 without its macroblock tree vs with it (crf 12, 1 thread)",
        "goal": "one output per input under every heap filling; size and time reported",
        "summary": headline(
            "Exact encode without x264's macroblock tree / with it", "one output per input under every "
            "heap filling (size and time reported)", latest=worst["size ratio"],
            latest_text="; ".join(f"{row['size']}: size {row['size ratio']:.3f}x, time "
                                  f"{ratio_text(row['time ratio'])}, distinct outputs "
                                  f"{row['distinct outputs over heap fillings ours / mbtree']}" for row in rows),
            verdict_text="met" if all(row["distinct outputs over heap fillings ours / mbtree"].startswith("1 /")
                                      for row in rows) else "missed"),
        "rows": rows,
        "notes": [f"Heap fillings: MALLOC_PERTURB_ in {PERTURB_BYTES} (glibc fills fresh allocations "
                  "with the byte's complement), one child process each; the clips are synthetic, "
                  "decoded from the dataset's own encode."],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--digest", type=Path, help="(child) print the digest of encoding these clips")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="ours")
    args = parser.parse_args()
    if args.digest:
        print(digest(args.digest, args.encoder))
    else:
        print(json.dumps(run(args.repeats), indent=1))


if __name__ == "__main__":
    main()
