"""`interactavatar train vae|pim|audio|joint`: one training stage; rerun on the same --out to resume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="run (or resume) one training stage under DeepSpeed")
    stages = train.add_subparsers(dest="stage", required=True)
    for stage, description in (
        ("vae", "the shared causal VAE on videos and motion videos"),
        ("pim", "PIM pretrain: detection / continuation / generation curriculum"),
        ("audio", "AIM audio pretrain: audio and text, no motion"),
        ("joint", "joint fine-tune of both streams and the aligner"),
    ):
        parser = stages.add_parser(stage, help=description)
        parser.add_argument("--preset", default="demo")
        parser.add_argument("--data", required=True, type=Path, help="dataset folder (manifest.jsonl)")
        parser.add_argument("--out", required=True, type=Path)
        if stage != "vae":
            parser.add_argument("--vae", required=True, type=Path, help="the vae stage's output (or a VAE folder)")
        if stage == "joint":
            parser.add_argument("--pim", required=True, type=Path)
            parser.add_argument("--audio", required=True, type=Path)
            parser.add_argument("--injection", default="residual", choices=("residual", "last", "add"))
        if stage == "vae":
            parser.add_argument("--motion-steps", type=int,
                                help="motion-video steps per video step (default: StageSpec.vae_motion_steps)")
        if stage == "pim":
            parser.add_argument("--curriculum", default="1,1,1",
                                help="detection,continuation,generation weights (0,1,1 is the no-detection ablation)")
        parser.add_argument("--steps", type=int, default=100)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--checkpoint-every", type=int, default=50)
        parser.add_argument("--log-every", type=int, default=10)
        parser.add_argument("--batch-size", type=int, default=4, help="micro-batch per process")
        parser.add_argument("--grad-accum", type=int, default=1,
                            help="micro-batches per optimizer step (global batch: batch-size x processes x grad-accum)")
        parser.add_argument("--lr", type=float, default=1e-4)
        parser.add_argument("--warmup-steps", type=int, default=0)
        parser.add_argument("--zero-stage", type=int, default=2, choices=(0, 1, 2, 3))
        parser.add_argument("--gradient-checkpointing", action="store_true")
        parser.add_argument("--data-rev", help="the data's git/DVC revision (default: git HEAD of --data)")
        parser.add_argument("--parent-run-id", help="MLflow run to nest this stage's run under")
        parser.set_defaults(func=run_train)


def spec_from_args(args: argparse.Namespace):
    from interactavatar.train.curriculum import Curriculum
    from interactavatar.train.engine import EngineConfig
    from interactavatar.train.stages import StageSpec

    return StageSpec(
        stage=args.stage, preset=args.preset, data=args.data, out=args.out, steps=args.steps, seed=args.seed,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        engine=EngineConfig(micro_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
                            learning_rate=args.lr, warmup_steps=args.warmup_steps, zero_stage=args.zero_stage),
        vae=getattr(args, "vae", None), pim=getattr(args, "pim", None), audio=getattr(args, "audio", None),
        curriculum=Curriculum.parse(getattr(args, "curriculum", "1,1,1")),
        injection=getattr(args, "injection", "residual"), gradient_checkpointing=args.gradient_checkpointing,
        data_rev=args.data_rev, parent_run_id=args.parent_run_id,
        **({} if getattr(args, "motion_steps", None) is None else {"vae_motion_steps": args.motion_steps}),
    )


def run_train(args: argparse.Namespace) -> int:
    from interactavatar.train.engine import shutdown
    from interactavatar.train.stages import run_stage

    try:
        out = run_stage(spec_from_args(args))
    finally:
        shutdown()
    print(json.dumps({"stage": args.stage, "model": str(out)}))
    return 0
