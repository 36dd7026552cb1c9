"""`interactavatar demo retrain`: continual retraining on one machine, after `make demo`.

1. Champion v1: the `make demo` output in --out (its data repository, its MLflow store); without
   one, the demo's data and a pipeline run from scratch make it. One request is served from it.
2. A data engineer brings a batch of new takes (videos + sidecars, made from new synthetic clips),
   `interactavatar data ingest`s them into the dataset and versions it: `dvc add`, `git commit`,
   `dvc push`. That is data revision v2.
3. The scheduled run: `init_model=champion`, `data_rev` HEAD. It warm-starts from v1, fine-tunes on
   v2, scores itself against v1 on v2's held-out clips, and the gate decides.
4. A harmful run: the same, at a learning rate that wrecks the model. The gate must refuse it, and
   the endpoint keeps serving the champion; one more request is served from the champion.
5. Lineage: the retrained version, back to v1, with both data revisions.

The command exits 1 when step 4 fails: the harmful version promoted, or the champion moved.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from interactavatar.config import MODEL_NAME
from interactavatar.io.progress import Progress

# 50x the demo's rate: Adam then moves every weight by about 0.05 a step, and 150 steps wreck what
# the stages learned.
HARMFUL_LEARNING_RATE = 0.05


def add_retrain_command(demo_commands: argparse._SubParsersAction) -> None:
    retrain = demo_commands.add_parser(
        "retrain", help="after `make demo`: new data -> warm-start retraining -> the gate; a harmful run refused",
        # cli.HelpFormatter keeps this numbered list's lines.
        description=__doc__.split("\n\n")[1])
    retrain.add_argument("--out", type=Path, default=Path("demo_out"), help="the `make demo` output to continue")
    retrain.add_argument("--new-clips", type=int, default=48, help="clips in the new batch")
    retrain.add_argument("--num-clips", type=int, default=160, help="clips of v1, when --out holds no demo yet")
    retrain.add_argument("--seed", type=int, default=0)
    retrain.add_argument("--harmful-learning-rate", type=float, default=HARMFUL_LEARNING_RATE)
    retrain.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                         help="pipeline parameter, for every run")
    retrain.set_defaults(func=run_retrain)


def export_takes(dataset: Path, folder: Path) -> int:
    """A dataset's clips as a data engineer brings them to `data ingest`: NAME.mp4, NAME.wav and a
    NAME.json sidecar with the text, the annotations and the split."""
    from interactavatar.data.schema import read_clip, read_manifest

    folder.mkdir(parents=True, exist_ok=True)
    entries = read_manifest(dataset)
    for entry in entries:
        _, files = read_clip(dataset, entry)
        meta = json.loads(files.meta.read_text())
        shutil.copyfile(files.video, folder / f"{entry.clip_id}.mp4")
        shutil.copyfile(files.speech, folder / f"{entry.clip_id}.wav")
        sidecar = {k: meta[k] for k in ("text", "body", "left_hand", "right_hand", "face", "objects", "split")}
        (folder / f"{entry.clip_id}.json").write_text(json.dumps(sidecar))
    return len(entries)


def add_batch(repo: Path, count: int, seed: int, spec, work: Path, env: dict) -> str:
    """Step 2: `count` new takes ingested into the repository's dataset and versioned; returns v2."""
    from interactavatar.data.synth import synthesize
    from interactavatar.data.versioning import DATA_PATH, commit_dataset

    synthesize(work / "new-clips", count, seed, spec)
    export_takes(work / "new-clips", work / "takes")
    subprocess.run([sys.executable, "-m", "interactavatar.cli", "data", "ingest", "--videos", str(work / "takes"),
                    "--out", str(repo / DATA_PATH)], env=env, check=True)
    return commit_dataset(repo, f"data: {count} new takes (seed {seed}), ingested")


def run_and_register(params: dict, work: Path, name: str = MODEL_NAME) -> dict:
    """One pipeline run; what it registered: the version, the gate's reason, whether it holds the
    title right after, the run's wall time."""
    import mlflow

    from interactavatar.pipeline.commands import run_local
    from interactavatar.registry.mlflow import champion_version

    run = run_local(params, work)
    (version,) = mlflow.MlflowClient().search_model_versions(
        f"name='{name}' and tags.pipeline_run_id = '{run['parent_run_id']}'")
    tags = version.tags
    return {"version": str(version.version), "promoted": champion_version(name) == str(version.version),
            "gate_passed": tags.get("gate.passed") == "true", "reason": tags.get("gate.reason", ""),
            "baseline_version": tags.get("gate.baseline_version", ""), "data_rev": tags.get("data_rev", ""),
            "wall_s": run["wall_s"]}


def run_retrain(args: argparse.Namespace) -> int:
    from interactavatar.config import preset
    from interactavatar.data.synth import SynthSpec
    from interactavatar.data.versioning import make_versioned_dataset
    from interactavatar.pipeline.commands import parse_params
    from interactavatar.pipeline.demo import DEMO_PARAMS, demo_environment, request_video
    from interactavatar.registry.mlflow import champion_version, lineage

    if args.new_clips < 1:
        raise ValueError(f"--new-clips {args.new_clips}: must be at least 1")
    started = time.perf_counter()
    out, env = demo_environment(args.out)
    params = {**DEMO_PARAMS, "seed": args.seed, **parse_params(args.param)}
    spec = SynthSpec.from_config(preset(params["preset"]))
    repo, work = out / "data-repo", out / "retrain"
    summary: dict = {}
    # Steps 1-4 on the bar; the pipeline's own tasks report their steps and clips beneath it.
    progress = Progress("demo retrain", 4, unit="stage")

    with progress.stage("champion v1"):
        if champion_version() is None:  # no demo in --out: made now
            revision = make_versioned_dataset(repo, args.num_clips, args.seed, spec, remote=out / "dvc-remote",
                                              message=f"demo data: {args.num_clips} synthetic clips")
            summary["scratch"] = run_and_register({"data_repo": str(repo), "data_rev": revision, **params},
                                                  work / "scratch")
        first = champion_version()
        if first is None:
            raise RuntimeError(f"{out}: no champion after the run from scratch: {summary['scratch']['reason']}")
        summary["v1"] = {"version": first,
                         **request_video(repo / "data" / "synth", out, env, args.seed, "retrain_v1")}

    with progress.stage("new takes, ingested and versioned"):
        summary["data_rev_v2"] = add_batch(repo, args.new_clips, args.seed + 1, spec, work / "batch", env)

    with progress.stage("the scheduled run: warm start from the champion on HEAD"):
        scheduled = {"data_repo": str(repo), "data_rev": "", **params, "init_model": "champion"}
        summary["retrained"] = run_and_register(scheduled, work / "scheduled")
        champion = champion_version()

    with progress.stage("a harmful run, which the gate must refuse"):
        summary["harmful"] = {"learning_rate": args.harmful_learning_rate, **run_and_register(
            {**scheduled, "learning_rate": args.harmful_learning_rate}, work / "harmful")}
        holder = champion_version()
        kept = holder == champion and not summary["harmful"]["promoted"]
        summary["champion"] = {"version": holder, "kept_after_harmful_run": kept,
                               **request_video(repo / "data" / "synth", out, env, args.seed, "retrain_champion")}

    # 5. Lineage of the retrained version.
    summary["lineage"] = lineage(summary["retrained"]["version"])
    if "scratch" in summary:
        summary["warm_over_scratch_wall"] = round(summary["retrained"]["wall_s"] / summary["scratch"]["wall_s"], 3)
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=1))
    if not kept:
        print(f"the harmful run's version {summary['harmful']['version']} took the title: "
              f"{summary['harmful']['reason']}", file=sys.stderr)
    return 0 if kept else 1
