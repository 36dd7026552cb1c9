"""`interactavatar train vae|pim|audio|joint`: one training stage; rerun on the same --out to resume."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from interactavatar.config import INJECTIONS, VAE_KINDS
from interactavatar.train.curriculum import Curriculum
from interactavatar.train.engine import EngineConfig, shutdown
from interactavatar.train.stages import STAGES, StageSpec, run_stage

# Help for the input folders (Stage.needs) that say more than their name.
INPUT_HELP = {"vae": "the vae stage's output (or a VAE folder)"}
# The options one stage's command alone takes, after its input folders (add_argument's keywords).
STAGE_OPTIONS: dict[str, dict[str, dict]] = {
    "vae": {"--motion-steps": dict(type=int,
                                   help="motion-video steps per video step (default: StageSpec.vae_motion_steps)"),
            "--video-crop": dict(type=int, metavar="PX",
                                 help="train video steps on random PX x PX crops (default: whole frames)"),
            "--vae-kind": dict(choices=VAE_KINDS, help="the VAE's architecture at the preset's sizes (default: the preset's)")},
    "pim": {"--curriculum": dict(default="1,1,1",
                                 help="detection,continuation,generation weights (0,1,1 is the no-detection ablation)")},
    "joint": {"--injection": dict(default="residual", choices=INJECTIONS),
              "--lora-rank": dict(type=int, metavar="R",
                                  help="train rank-R LoRA adapters (PEFT) on both streams' attention and FFN, with "
                                       "the aligner and norms, on the frozen --init model (a registry version), and "
                                       "write them as a LoRA version (default: a full fine-tune)"),
              "--lora-alpha": dict(type=float, metavar="A", help="the adapters' scale is A / R (default: A = R)")},
}
# How spec_to_argv writes the stage options.
OPTION_VALUES = {
    "--motion-steps": lambda spec: str(spec.vae_motion_steps),
    "--vae-kind": lambda spec: spec.vae_kind,
    "--video-crop": lambda spec: None if spec.vae_video_crop is None else str(spec.vae_video_crop),
    "--curriculum": lambda spec: ",".join(repr(weight) for weight in spec.curriculum.weights()),
    "--injection": lambda spec: spec.injection,
    "--lora-rank": lambda spec: None if spec.lora_rank is None else str(spec.lora_rank),
    "--lora-alpha": lambda spec: None if spec.lora_alpha is None else repr(spec.lora_alpha),
}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="run (or resume) one training stage under DeepSpeed")
    stages = train.add_subparsers(dest="stage", required=True)
    for stage in STAGES.values():
        parser = stages.add_parser(stage.name, help=stage.description)
        parser.add_argument("--preset", default="demo")
        parser.add_argument("--data", required=True, type=Path, help="dataset folder (manifest.jsonl)")
        parser.add_argument("--out", required=True, type=Path)
        for name in stage.needs:
            parser.add_argument(f"--{name}", type=Path, help=f"{INPUT_HELP.get(name, f'the {name} stage output')} "
                                f"(required unless --init)")
        if stage.needs:  # the stages that start from a model; the VAE stage starts from nothing
            parser.add_argument("--init", metavar="MODEL",
                                help="warm start from this model (a directory, s3:// URI, models:/NAME@ALIAS or "
                                     "models:/NAME/VERSION): its weights, VAE and encoders replace --"
                                     + " / --".join(stage.needs))
        for flag, options in STAGE_OPTIONS.get(stage.name, {}).items():
            parser.add_argument(flag, **options)
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
        parser.add_argument("--data-repo", help="the DVC repository --data was fetched from, for the run's dataset "
                                                "input (default: the git checkout holding --data)")
        parser.add_argument("--data-path", help="the dataset's path in --data-repo")
        parser.add_argument("--parent-run-id", help="MLflow run to nest this stage's run under")
        parser.set_defaults(func=run_train)


def spec_from_args(args: argparse.Namespace) -> StageSpec:
    return StageSpec(
        stage=args.stage, preset=args.preset, data=args.data, out=args.out, steps=args.steps, seed=args.seed,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        engine=EngineConfig(micro_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
                            learning_rate=args.lr, warmup_steps=args.warmup_steps, zero_stage=args.zero_stage),
        vae=getattr(args, "vae", None), pim=getattr(args, "pim", None), audio=getattr(args, "audio", None),
        curriculum=Curriculum.parse(getattr(args, "curriculum", "1,1,1")),
        injection=getattr(args, "injection", "residual"), gradient_checkpointing=args.gradient_checkpointing,
        data_rev=args.data_rev, data_repo=args.data_repo, data_path=args.data_path, parent_run_id=args.parent_run_id,
        **({} if getattr(args, "motion_steps", None) is None else {"vae_motion_steps": args.motion_steps}),
        vae_kind=getattr(args, "vae_kind", None), vae_video_crop=getattr(args, "video_crop", None),
        init=getattr(args, "init", None),
        lora_rank=getattr(args, "lora_rank", None), lora_alpha=getattr(args, "lora_alpha", None),
    )


def spec_to_argv(spec: StageSpec) -> list[str]:
    """The `interactavatar train` arguments that `spec_from_args` turns back into `spec` (to run
    the stage in another process, such as a TrainJob's nodes).

    Raises ValueError naming each setting the command line cannot carry (check_round_trip) rather
    than dropping it.
    """
    engine = spec.engine
    argv = ["train", spec.stage, "--preset", spec.preset, "--data", str(spec.data), "--out", str(spec.out),
            "--steps", str(spec.steps), "--seed", str(spec.seed), "--checkpoint-every", str(spec.checkpoint_every),
            "--log-every", str(spec.log_every), "--batch-size", str(engine.micro_batch_size),
            "--grad-accum", str(engine.gradient_accumulation_steps), "--lr", repr(engine.learning_rate),
            "--warmup-steps", str(engine.warmup_steps), "--zero-stage", str(engine.zero_stage)]
    for name in STAGES[spec.stage].needs:
        if getattr(spec, name) is not None:
            argv += [f"--{name}", str(getattr(spec, name))]
    if spec.init:
        argv += ["--init", spec.init]
    for flag in STAGE_OPTIONS.get(spec.stage, {}):
        value = OPTION_VALUES[flag](spec)
        if value is not None:  # None: the option's default
            argv += [flag, value]
    if spec.gradient_checkpointing:
        argv.append("--gradient-checkpointing")
    for flag, value in (("--data-rev", spec.data_rev), ("--data-repo", spec.data_repo), ("--data-path", spec.data_path)):
        if value:
            argv += [flag, value]
    if spec.parent_run_id:
        argv += ["--parent-run-id", spec.parent_run_id]
    check_round_trip(spec, argv)
    return argv


def check_round_trip(spec: StageSpec, argv: list[str]) -> None:
    """Parse `argv` with the train command's own parser and raise ValueError naming each setting
    (engine.<name> for the engine's) in which the spec it builds differs from `spec`."""
    parser = argparse.ArgumentParser(prog="interactavatar")
    add_commands(parser.add_subparsers(dest="command"))
    rebuilt = spec_from_args(parser.parse_args(argv))
    lost = [f"engine.{f.name}" for f in dataclasses.fields(spec.engine)
            if getattr(rebuilt.engine, f.name) != getattr(spec.engine, f.name)]
    lost += [f.name for f in dataclasses.fields(spec)
             if f.name != "engine" and getattr(rebuilt, f.name) != getattr(spec, f.name)]
    if lost:
        raise ValueError(f"train {spec.stage}: {', '.join(lost)} cannot be passed to `interactavatar train` "
                         "on a TrainJob's nodes; leave the default or train on one node")


def run_train(args: argparse.Namespace) -> int:
    try:
        out = run_stage(spec_from_args(args))
    finally:
        shutdown()
    print(json.dumps({"stage": args.stage, "model": str(out)}))
    return 0
