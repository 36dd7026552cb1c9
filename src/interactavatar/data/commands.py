"""`interactavatar data synth|validate|ingest`: the data subcommands.

Heavy imports (PyAV, Great Expectations) happen inside the handlers, so that `interactavatar --help`
stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from interactavatar.config import preset


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="make, check and import datasets")
    commands = data.add_subparsers(dest="data_command", required=True)
    demo = preset("demo")

    synth = commands.add_parser("synth", help="write a synthetic GroundedInter dataset")
    synth.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    synth.add_argument("--num-clips", type=int, default=64)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--width", type=int, default=demo.video_size[1])
    synth.add_argument("--height", type=int, default=demo.video_size[0])
    synth.add_argument("--num-frames", type=int, default=demo.num_frames, help="1+4k")
    synth.add_argument("--fps", type=float, default=float(demo.audio.fps))
    synth.set_defaults(func=run_synth)

    validate = commands.add_parser("validate", help="check a dataset (Great Expectations); exit 1 on failures")
    validate.add_argument("dataset", type=Path)
    validate.add_argument("--report", type=Path, default=Path("data-validation.html"),
                          help="HTML report path; the JSON summary goes beside it (.json)")
    validate.add_argument("--required-splits", default="train",
                          help="comma-separated splits that must hold clips ('' for none, e.g. test cases)")
    validate.add_argument("--gx-project", type=Path, metavar="DIR",
                          help="folder of a file-backed Great Expectations project (its gx/ is made when missing): "
                               "the suite is loaded from it, and the result and GX's Data Docs are stored in it "
                               "(dvc.yaml passes the repository's root); default: an in-memory context")
    validate.set_defaults(func=run_validate)

    ingest = commands.add_parser("ingest", help="convert videos with sidecars, or release test cases, into clips")
    source = ingest.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", type=Path, help="folder of NAME.mp4 + NAME.json (+ NAME.wav)")
    source.add_argument("--cases", type=Path, help="the release's test-case JSON list")
    ingest.add_argument("--out", required=True, type=Path, help="dataset folder to create or extend")
    ingest.add_argument("--split", choices=("train", "val", "test"),
                        help="split for clips that do not name one (default: by clip id hash; cases: test)")
    ingest.add_argument("--num-frames", type=int, default=demo.num_frames,
                        help="frames per test case (capped by its speech length)")
    ingest.set_defaults(func=run_ingest)


def run_synth(args: argparse.Namespace) -> int:
    from interactavatar.data.synth import SynthSpec, synthesize

    spec = SynthSpec(width=args.width, height=args.height, num_frames=args.num_frames, fps=args.fps)
    entries = synthesize(args.out, args.num_clips, args.seed, spec)
    print(f"wrote {len(entries)} clips to {args.out}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from interactavatar.data.validation import validate, write_reports

    dataset = args.dataset.resolve()
    if not dataset.is_dir():
        raise FileNotFoundError(f"{args.dataset}: no such dataset folder")
    if args.report.resolve().is_relative_to(dataset):
        raise ValueError(f"--report {args.report}: inside the dataset, which validation never modifies")
    required = tuple(s.strip() for s in args.required_splits.split(",") if s.strip())
    report = validate(dataset, required, gx_project=args.gx_project)
    json_path = write_reports(report, args.report)
    for failure in report.failures:
        where = args.dataset if failure.path == "." else f"{args.dataset / failure.path} ({failure.clip_id})"
        print(f"{where}: {failure.reason}", file=sys.stderr)
    verdict = "passed" if report.success else f"FAILED: {len(report.failures)} problems"
    print(f"{args.dataset}: {report.num_clips} clips, validation {verdict}; report {args.report}, summary {json_path}")
    if report.stored is not None:
        print(f"Great Expectations result {report.stored.result}, Data Docs {report.stored.data_docs_page}")
    return 0 if report.success else 1


def run_ingest(args: argparse.Namespace) -> int:
    from interactavatar.data.ingest import ingest_cases, ingest_videos

    if args.videos:
        entries = ingest_videos(args.videos, args.out, split=args.split)
    else:
        entries = ingest_cases(args.cases, args.out, num_frames=args.num_frames, split=args.split or "test")
    print(f"ingested {len(entries)} clips into {args.out}")
    return 0
