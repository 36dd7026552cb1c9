"""Data throughput at the demo preset's size (128x128 video, 64x64 motion, 17 frames at 25 fps).

Clips per second for `synth` (generate, encode, write) and `validate` (decode every clip, run the
Great Expectations suite; Great Expectations' import is paid once and reported apart), and items
per second for the training dataset (decode, resample, render motion, audio windows; first epoch,
then with the motion cache warm), since a CPU training step must not wait on its data. Wall and
process-CPU clocks are both reported: the CPU clock ignores neighbours on a shared machine.

    python -m benchmarks.bench_data [--clips N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.summary import headline
from interactavatar.config import preset
from interactavatar.data.dataset import ClipDataset
from interactavatar.data.synth import SynthSpec, synthesize


def _timed(fn) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def _rate(count: int, runs: list[dict[str, float]]) -> dict[str, float]:
    return {f"{clock}_per_s": round(count / statistics.median(r[clock] for r in runs), 2) for clock in ("wall", "cpu")}


def run(num_clips: int = 16, repeats: int = 3, quick: bool = False) -> dict:
    if quick:
        num_clips, repeats = 2, 1
    config = preset("demo")
    spec = SynthSpec.from_config(config)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as scratch:
        root = Path(scratch)
        synth_runs = [_timed(lambda r=r: synthesize(root / f"run{r}", num_clips, seed=r, spec=spec))
                      for r in range(repeats)]
        dataset = root / "run0"

        import_time = _timed(lambda: __import__("great_expectations"))
        from interactavatar.data.validation import validate

        validate_runs = [_timed(lambda: validate(dataset)) for _ in range(repeats)]

        items = ClipDataset(dataset, config, split=None)
        first_epoch = [_timed(lambda: [items[i] for i in range(len(items))])]
        cached = [_timed(lambda: [items[i] for i in range(len(items))]) for _ in range(repeats)]
    rates = {
        "synth_clips": _rate(num_clips, synth_runs),
        "validate_clips": _rate(num_clips, validate_runs),
        "great_expectations_import_s": round(import_time["wall"], 2),
        "dataset_items_first_epoch": _rate(num_clips, first_epoch),
        "dataset_items_motion_cached": _rate(num_clips, cached),
    }
    return {
        "title": "Data throughput (demo preset: 128x128 video, 64x64 motion, 17 frames)",
        "summary": headline(
            "Data throughput, demo preset", "none (a CPU training step should not wait on its data)",
            latest=rates["dataset_items_motion_cached"]["wall_per_s"],
            latest_text=(f"synth {rates['synth_clips']['wall_per_s']} clips/s, validate "
                         f"{rates['validate_clips']['wall_per_s']} clips/s, dataset "
                         f"{rates['dataset_items_first_epoch']['wall_per_s']} items/s first epoch, "
                         f"{rates['dataset_items_motion_cached']['wall_per_s']} motion cached (wall)")),
        "preset": "demo", "clips": num_clips, "repeats": repeats,
        **rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.clips, args.repeats), indent=1))


if __name__ == "__main__":
    main()
