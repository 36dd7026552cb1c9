"""`interactavatar model init` and `interactavatar generate` (local sampling from a model directory)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="model directories")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    init = model_commands.add_parser("init", help="write a randomly initialised model directory")
    init.add_argument("--preset", default="demo", help="tiny, demo or paper")
    init.add_argument("--out", required=True, type=Path)
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(func=run_init)

    generate = subparsers.add_parser("generate", help="image + sentence + speech -> video with its motion")
    generate.add_argument("--model", type=Path, help="model directory (local generation)")
    generate.add_argument("--endpoint", help="a serving endpoint's base URL, e.g. http://127.0.0.1:8080")
    generate.add_argument("--protocol", default="v2", choices=("v2", "v1"), help="with --endpoint")
    generate.add_argument("--request-timeout", type=float, default=1800.0, help="seconds, with --endpoint")
    generate.add_argument("--cases", type=Path, help="a JSON list of test cases in the public release's format")
    generate.add_argument("--out-dir", type=Path, help="where --cases writes <video_id>.mp4")
    generate.add_argument("--image", type=Path)
    generate.add_argument("--audio", type=Path, help="speech, any rate (resampled to 16 kHz)")
    generate.add_argument("--text")
    generate.add_argument("-o", "--output", type=Path, help="mp4 with the speech muxed in")
    generate.add_argument("--motion-output", type=Path, help="the motion video (default: OUTPUT stem + _motion.mp4)")
    generate.add_argument("--mode", default="interact", choices=("interact", "motion", "audio", "pose"))
    generate.add_argument("--pose-video", type=Path, help="motion video driving AIM in --mode pose")
    generate.add_argument("--steps", type=int)
    generate.add_argument("--num-frames", type=int)
    generate.add_argument("--text-scale", type=float)
    generate.add_argument("--audio-scale", type=float)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--face-box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    generate.add_argument("--device", default="cpu")
    generate.set_defaults(func=run_generate)


def run_init(args: argparse.Namespace) -> int:
    from interactavatar.model.directory import init_model_directory

    print(init_model_directory(args.preset, args.out, args.seed))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    if args.endpoint or args.cases:
        from interactavatar.serve.cases import run_generate_command

        return run_generate_command(args)
    missing = [name for name in ("model", "image", "audio", "text", "output") if getattr(args, name) is None]
    if missing:
        raise ValueError(f"missing {', '.join('--' + name for name in missing)} (or use --endpoint / --cases)")
    from tqdm import tqdm

    from interactavatar.generation import InteractAvatarPipeline
    from interactavatar.media import load_image, load_speech, read_video

    pipeline = InteractAvatarPipeline.from_pretrained(args.model, args.device)
    pose_video = read_video(args.pose_video)[0] if args.pose_video else None
    with tqdm(desc="sampling", unit="step") as bar:

        def progress(step: int, steps: int) -> None:
            bar.total = steps
            bar.update(step - bar.n)

        result = pipeline(
            load_image(args.image), args.text, load_speech(args.audio, pipeline.cfg.audio.sample_rate),
            mode=args.mode, num_frames=args.num_frames, steps=args.steps, text_scale=args.text_scale,
            audio_scale=args.audio_scale, seed=args.seed, face_box=args.face_box, pose_video=pose_video,
            progress=progress,
        )
    motion_output = args.motion_output or args.output.with_name(f"{args.output.stem}_motion.mp4")
    result.save(args.output, motion_output)
    print(json.dumps({"video": str(args.output), "motion": str(motion_output), **result.timings}))
    return 0
