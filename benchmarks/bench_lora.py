"""LoRA fine-tuning against a full fine-tune from the same registered base, at the same steps and batch.

One base model (the demo preset, randomly initialised: cost does not depend on what the weights
learned) is registered in a SQLite registry; then the joint stage warm-starts from it, each run in a
fresh process, with the same data, seed, steps, batch and learning rate: whole (`train joint --init
models:/interactavatar/1`) and with LoRA (`--lora-rank R`: PEFT adapters on both streams' attention
and FFN, the aligner and norms trained whole), alternated, `repeats` runs each (the ratios take
each side's best: on shared cores a neighbour only ever adds time). Measured per run: the process's
wall time and peak RSS (wait4 rusage), its setup time (model, feature cache, DeepSpeed) as the
stage logged it, the trainable and total parameters (the stage's MLflow params), and what it
wrote: the full fine-tune's weights (model.safetensors) against the LoRA version's adapter
(adapter.safetensors, which holds the adapter, the aligner and the norms).

    python -m benchmarks.bench_lora [--steps 30] [--rank 8] [--clips 24] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.summary import headline
from benchmarks.timing import run_child
from interactavatar.config import MODEL_NAME, preset
from interactavatar.io.model_refs import ADAPTER_WEIGHTS, MODEL_CACHE_ENV
from interactavatar.pipeline.demo import DEMO_PARAMS
from tests.helpers.registry import register_as_champion


def _train(name: str, flags: list[str], env: dict, out: Path) -> dict:
    """One joint stage in a child process: wall time, and the child's own CPU time (user + system)
    and peak RSS."""
    command = [sys.executable, "-m", "interactavatar.cli", "train", "joint", "--out", str(out), *flags]
    return run_child(command, env, f"train joint ({name})")


def _run_facts(out: Path, tracking: str) -> dict:
    """The stage's own record: setup time, the training loop's time (from the setup metric's
    timestamp to the last step's), samples/s, parameters."""
    import mlflow

    client = mlflow.MlflowClient(tracking)
    run = client.get_run((out / "mlflow_run_id").read_text().strip())
    (setup,) = client.get_metric_history(run.info.run_id, "setup_s")
    last_step = max(m.timestamp for m in client.get_metric_history(run.info.run_id, "loss"))
    rates = sorted(m.value for m in client.get_metric_history(run.info.run_id, "samples_per_s"))
    return {"setup_s": round(setup.value, 1), "loop_s": round((last_step - setup.timestamp) / 1000, 1),
            "samples_per_s (median window)": round(rates[len(rates) // 2], 2),
            "trainable_params": int(run.data.params["parameters.trainable"]),
            "total_params": int(run.data.params["parameters.total"])}


def run(steps: int | None = None, rank: int = 8, num_clips: int = 24, repeats: int = 2, quick: bool = False) -> dict:
    preset_name, steps, rank, num_clips = ("tiny", 2, 2, 6) if quick else ("demo", steps or 30, rank, num_clips)
    batch, lr = (2, 1e-3) if quick else (DEMO_PARAMS["batch_size"], DEMO_PARAMS["learning_rate"])
    repeats = 1 if quick else repeats
    from interactavatar.data.synth import SynthSpec, synthesize
    from interactavatar.model.bundle import init_model_directory

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as scratch:
        root = Path(scratch)
        tracking = f"sqlite:///{root / 'mlflow.db'}"
        # The children train on this process's thread count (run.py's --threads).
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, MODEL_CACHE_ENV: str(root / "model-cache"),
               "OMP_NUM_THREADS": str(torch.get_num_threads())}
        synthesize(root / "data", num_clips, seed=0, spec=SynthSpec.from_config(preset(preset_name)))
        version = register_as_champion(init_model_directory(preset_name, root / "base"), tracking)
        common = ["--preset", preset_name, "--data", str(root / "data"), "--init", f"models:/{MODEL_NAME}/{version}",
                  "--steps", str(steps), "--batch-size", str(batch), "--lr", repr(lr), "--checkpoint-every",
                  str(steps), "--log-every", str(max(steps // 10, 1))]
        sides = {"full": ("full fine-tune", []), "lora": (f"LoRA rank {rank}", ["--lora-rank", str(rank)])}
        # Alternated, so that a neighbour's load on the shared cores falls on both sides alike.
        for repeat, kind in ((repeat, kind) for repeat in range(repeats) for kind in sides):
            name, extra = sides[kind]
            out = root / f"{kind}-{repeat}"
            row = {"run": name, "repeat": repeat + 1, **_train(name, common + extra, env, out),
                   **_run_facts(out, tracking)}
            weights = out / ("model.safetensors" if kind == "full" else ADAPTER_WEIGHTS)
            row["weights_written"] = weights.name
            row["weights_mb"] = round(weights.stat().st_size / 2**20, 3)
            row["directory_mb"] = round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()
                                            and not {"checkpoints", "init"} & set(p.relative_to(out).parts))
                                        / 2**20, 3)
            row["checkpoint_mb"] = round(sum(p.stat().st_size for p in (out / "checkpoints").rglob("*")
                                             if p.is_file()) / 2**20, 1)
            rows.append(row | {"kind": kind})
            shutil.rmtree(out, ignore_errors=True)
    # Per side the best of its repeats: interference only ever adds time.
    best = {kind: {key: min(row[key] for row in rows if row["kind"] == kind)
                   for key in ("wall_s", "cpu_s", "loop_s", "peak_rss_mb", "weights_mb", "trainable_params")}
            for kind in sides}
    for row in rows:
        del row["kind"]
    full, lora = best["full"], best["lora"]
    wall, loop, cpu = lora["wall_s"] / full["wall_s"], lora["loop_s"] / full["loop_s"], lora["cpu_s"] / full["cpu_s"]
    rss, size = lora["peak_rss_mb"] / full["peak_rss_mb"], lora["weights_mb"] / full["weights_mb"]
    trainable = lora["trainable_params"] / full["trainable_params"]
    return {
        "title": f"LoRA vs full fine-tune from one registered base ({preset_name} preset, {steps} steps, "
                 f"batch {batch}, rank {rank})",
        "goal": "what a LoRA version saves against a full fine-tune: bytes written, parameters trained, "
                "time and memory at the same steps",
        "summary": headline(f"LoRA rank {rank} / full fine-tune, written weights ({preset_name} preset)",
                            "an adapter far smaller than the model; time and memory reported (no numeric target)",
                            latest=round(size, 4),
                            latest_text=f"weights {size:.3f}x ({lora['weights_mb']} / {full['weights_mb']} MB), "
                                        f"trainable parameters {trainable:.3f}x, training loop {loop:.2f}x, "
                                        f"process wall time {wall:.2f}x, CPU time {cpu:.2f}x, peak RSS {rss:.2f}x"),
        "rows": rows,
        "notes": [f"Data: {num_clips} synthetic clips (seed 0), the joint stage's train split. Every run: "
                  f"{steps} steps, batch {batch}, lr {lr}, one checkpoint at the end, from the same "
                  f"registered, randomly initialised {preset_name} model; {repeats} run(s) per side, alternated.",
                  f"Ratios LoRA / full, each side's best run: written weights {size:.4f}, trainable parameters "
                  f"{trainable:.4f}, training loop {loop:.3f}, process wall time {wall:.3f}, CPU time {cpu:.3f}, peak RSS "
                  f"{rss:.3f}.",
                  "wall_s is the whole process (imports, fetching the base from the registry, the feature cache, "
                  "DeepSpeed, the steps, the checkpoint and the model directory); setup_s the part before the "
                  "first step, as the stage logs it; loop_s the steps themselves (the setup metric's timestamp to "
                  "the last step's); cpu_s the process's user + system CPU time. peak_rss_mb is its own maximum "
                  "resident set (wait4 rusage). "
                  "total_params counts the adapters too.",
                  "Peak RSS: a LoRA step keeps fewer activations, yet its process peaks higher. Measured "
                  "2026-12-03 on one demo forward at batch 8 (saved_tensors_hooks): 385 MB in 665 tensors under "
                  "LoRA, 441 MB in 475 whole; with MALLOC_MMAP_THRESHOLD_=65536 (large blocks handed back to "
                  "the system) a 3-step probe peaked at 1155 MB under LoRA and 1233 MB whole: the difference is "
                  "glibc's heap keeping freed blocks, not live tensors. The optimizer state LoRA saves is small "
                  "at this size (AdamW moments and gradients of 3.0M parameters: about 36 MB); at the release's "
                  "5B parameters it is the bulk of training memory.",
                  "directory_mb: the model directory it wrote (a full fine-tune's holds its VAE and encoders too; "
                  "a LoRA version's only config.yaml, adapter.json, adapter.safetensors and lineage.json: the "
                  "rest comes from its base at load). checkpoint_mb: one DeepSpeed checkpoint (module and "
                  "optimizer state; the frozen base's weights are in the module's part either way)."],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(run(steps=args.steps, rank=args.rank, num_clips=args.clips, repeats=args.repeats), indent=1))
