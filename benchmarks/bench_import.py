"""Importing the release's checkpoint: peak memory of the streaming conversion against loading it whole.

A synthetic release-format transformer at the paper's widths (dim 3072, FFN 14336, 48 latent
channels, text 4096, the release's audio widths) with 3 layers instead of 30 (about 2.7 GB in bf16),
saved as 4 shards under the release's own key names (from `release-5b-keys.txt`), is converted into
our sharded model weights twice, each in a fresh process: by `model.release.transformer_tensors` +
`model.weights.write_sharded_weights` (one tensor at a time), and, as the reference, by loading
every shard, renaming, and saving (what a converter without streaming does). Peak RSS is measured
above each process's baseline (its peak reset after the imports, via /proc/self/clear_refs).

    python -m benchmarks.bench_import [--layers 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks.summary import headline

KEYS = Path(__file__).resolve().parents[2] / "shared" / "release-oracle" / "release-5b-keys.txt"
GOAL = 1.25  # peak RSS above baseline, as a multiple of the largest input shard

CHILD = r"""
import json, os, sys, time
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
from interactavatar.config import preset
from interactavatar.model.release import config_from_release, release_tensors, state_dict_from_release, transformer_tensors
from interactavatar.model.interact_avatar import InteractAvatar
from interactavatar.model.weights import write_sharded_weights

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
source, out, layers, method = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg = config_from_release({"num_layers": layers}, base=preset("paper"))
with torch.device("meta"):
    ours = InteractAvatar(cfg).state_dict()
Path("/proc/self/clear_refs").write_text("5")
baseline, started = status("VmRSS"), time.perf_counter()
if method == "streaming":
    write_sharded_weights(out, transformer_tensors(source, cfg), max_shard_bytes=1 << 30)
else:
    release = {}
    for path in sorted({tensor.path for tensor in release_tensors(source).values()}):
        release.update(load_file(str(path)))
    converted = state_dict_from_release(release, ours, str(source))
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in converted.items()}, str(out / "model.safetensors"))
seconds = time.perf_counter() - started
dtypes = sorted({str(v.dtype) for path in out.glob("*.safetensors") for v in load_file(str(path)).values()}) if method == "streaming" else []
print(json.dumps({"peak_above_baseline": status("VmHWM") - baseline, "seconds": seconds, "dtypes": dtypes}))
"""


def _release_shapes(layers: int) -> dict[str, list[int]]:
    """The release's keys and shapes at the 5B widths, blocks 0..layers-1 only."""
    shapes = {}
    for line in KEYS.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        parts = key.split(".")
        if parts[0] in ("blocks", "motion_blocks", "zero_motion_proj_blocks") and int(parts[1]) >= layers:
            continue
        shapes[key] = [int(n) for n in shape.strip("[]").split(",")]
    return shapes


def _write_release(folder: Path, layers: int, shards: int = 4) -> list[int]:
    """A release-format transformer folder of random bf16 tensors in `shards` files of about equal size."""
    shapes = _release_shapes(layers)
    sizes = {key: 2 * torch.Size(shape).numel() for key, shape in shapes.items()}
    target, groups = sum(sizes.values()) / shards, [[]]
    for key in shapes:
        if groups[-1] and sum(sizes[k] for k in groups[-1]) + sizes[key] / 2 > target * len(groups) - sum(
                sizes[k] for g in groups[:-1] for k in g):
            groups.append([])
        groups[-1].append(key)
    generator, weight_map = torch.Generator().manual_seed(0), {}
    for index, keys in enumerate(groups):
        name = f"diffusion_pytorch_model-{index + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file({key: torch.randn(shapes[key], generator=generator).to(torch.bfloat16) for key in keys},
                  str(folder / name))
        weight_map.update(dict.fromkeys(keys, name))
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return [(folder / name).stat().st_size for name in sorted(set(weight_map.values()))]


def _convert(source: Path, out: Path, layers: int, method: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(source), str(out), str(layers), method],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(quick: bool = False, layers: int = 3) -> dict:
    if quick:
        layers = 1
    with tempfile.TemporaryDirectory(prefix="bench-import-") as scratch:
        scratch = Path(scratch)
        (scratch / "release").mkdir()
        started = time.perf_counter()
        shard_bytes = _write_release(scratch / "release", layers)
        write_s = time.perf_counter() - started
        largest = max(shard_bytes)
        rows = []
        for method in ("streaming", "load whole (reference)"):
            measured = _convert(scratch / "release", scratch / method.split()[0], layers, method.split()[0])
            rows.append({"method": method, "checkpoint GB": round(sum(shard_bytes) / 1e9, 2),
                         "largest shard GB": round(largest / 1e9, 2),
                         "peak RSS above baseline GB": round(measured["peak_above_baseline"] / 1e9, 2),
                         "x largest shard": round(measured["peak_above_baseline"] / largest, 3),
                         "seconds": round(measured["seconds"], 1),
                         **({"output dtypes": ", ".join(measured["dtypes"])} if measured["dtypes"] else {})})
    streaming = rows[0]["x largest shard"]
    return {
        "title": "Release import: streaming conversion vs loading the checkpoint whole (peak RSS, CPU)",
        "goal": f"peak RSS above the process's baseline <= {GOAL}x the largest shard, bf16 in and out",
        "summary": headline("Release import, peak RSS / largest shard", f"<= {GOAL}x", latest=streaming,
                            latest_text=f"{streaming:.3f}x (loading whole: {rows[1]['x largest shard']:.3f}x)",
                            target=GOAL),
        "rows": rows,
        "notes": [f"Synthetic release checkpoint: paper widths, {layers} layer(s), {len(shard_bytes)} shards, "
                  f"random bf16 (written in {write_s:.0f} s).",
                  "Streaming holds one tensor at a time: its peak is the largest tensor (the FFN, 14336 x 3072 "
                  "in bf16 = 88 MB) read and written, whatever the shard size."],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=3)
    print(json.dumps(run(layers=parser.parse_args().layers), indent=1))
