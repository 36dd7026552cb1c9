"""`interactavatar evaluate --model DIR --data DIR --out DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from interactavatar.evaluate.compare import DEFAULT_LEVEL
from interactavatar.evaluate.external import EXTERNAL_METRICS


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate", help="score a model on a held-out split against an untrained floor and the ground truth",
        description="Writes OUT/metrics.json, OUT/report.html and OUT/metrics_by_system.json (dvc.yaml's "
                    "evaluation plots read eval/); logs to MLflow when a run is active or MLFLOW_TRACKING_URI is set.")
    evaluate.add_argument("--model", required=True, type=Path, help="model directory")
    evaluate.add_argument("--data", required=True, type=Path, help="dataset folder (manifest.jsonl)")
    evaluate.add_argument("--out", required=True, type=Path)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--num-clips", type=int, help="evaluate the split's first N clips (default: all)")
    evaluate.add_argument("--steps", type=int, help="sampling steps (default: the model's preset)")
    evaluate.add_argument("--seed", type=int, default=0, help="clip i is generated with seed + i")
    evaluate.add_argument("--no-floor", dest="floor", action="store_false",
                          help="skip the untrained-model floor (halves the time)")
    evaluate.add_argument("--max-offset", type=int, default=4, help="lip-sync offset search, +-frames")
    evaluate.add_argument("--samples", type=int, default=3, help="clips shown frame by frame in the report")
    evaluate.add_argument("--baseline", metavar="MODEL",
                          help="also score this model (directory, s3:// or models:/ reference, e.g. "
                               "models:/interactavatar@champion) on the same clips, seeds and steps, and give each "
                               "metric's paired difference with a bootstrap interval over clips")
    evaluate.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="the intervals' confidence level")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--parent-run-id", help="nest the MLflow run under this run")
    for kind, what in EXTERNAL_METRICS.items():
        evaluate.add_argument(f"--{kind.replace('_', '-')}", type=Path, metavar="PATH",
                              help=f"local {what} weights (not bundled; needs a plugin providing {kind!r})")
    evaluate.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from interactavatar.evaluate.run import (
        METRICS_FILE,
        REPORT_FILE,
        SUMMARY_METRICS,
        SYSTEMS,
        EvaluationSettings,
        evaluate,
    )

    if args.num_clips is not None and args.num_clips < 1:
        raise ValueError(f"--num-clips {args.num_clips}: must be at least 1")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps}: must be at least 1")
    settings = EvaluationSettings(
        model_dir=args.model, data_dir=args.data, out_dir=args.out, split=args.split, num_clips=args.num_clips,
        steps=args.steps, seed=args.seed, floor=args.floor, max_offset=args.max_offset, sample_clips=args.samples,
        device=args.device, parent_run_id=args.parent_run_id, baseline=args.baseline, level=args.level,
        external={kind: getattr(args, kind) for kind in EXTERNAL_METRICS if getattr(args, kind) is not None},
    )
    metrics = evaluate(settings)
    summary = {system: {name: metrics[system].get(name) for name in SUMMARY_METRICS}
               for system in SYSTEMS if system in metrics}
    if "comparison" in metrics:
        summary["model - baseline"] = {name: metrics["comparison"]["metrics"].get(name) for name in SUMMARY_METRICS}
    summary.update(metrics=str(args.out / METRICS_FILE), report=str(args.out / REPORT_FILE))
    print(json.dumps(summary, indent=1))
    return 0
