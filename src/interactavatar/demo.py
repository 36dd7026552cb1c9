"""`interactavatar demo`: the main job on embedded defaults, on the CPU.

Until the training pipeline lands, the demo synthesises a small dataset, initialises a demo-preset
model directory (random weights) and samples a video with its motion from a held-out clip's
reference frame, sentence and speech.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="run the main job on embedded defaults (CPU, small model)")
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.add_argument("--preset", default="demo")
    demo.add_argument("--num-clips", type=int, default=4)
    demo.add_argument("--steps", type=int, help="sampling steps (default: the preset's)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from interactavatar.config import preset
    from interactavatar.data.schema import read_manifest, read_meta
    from interactavatar.data.synth import SynthSpec, synthesize
    from interactavatar.generation import InteractAvatarPipeline
    from interactavatar.media import load_speech, read_video
    from interactavatar.model.directory import init_model_directory

    started = time.perf_counter()
    cfg = preset(args.preset)
    data_dir, model_dir = args.out / "data", args.out / "model"
    spec = SynthSpec(width=cfg.video_size[1], height=cfg.video_size[0], num_frames=cfg.num_frames,
                     fps=cfg.audio.fps, sample_rate=cfg.audio.sample_rate)
    entries = synthesize(data_dir, args.num_clips, args.seed, spec)
    init_model_directory(args.preset, model_dir, seed=args.seed)

    held_out = next((e for e in entries if e.split != "train"), entries[0])
    clip_dir = data_dir / held_out.path
    meta = read_meta(clip_dir)
    reference = read_video(clip_dir / meta.video)[0][0]
    speech = load_speech(clip_dir / (meta.audio or "audio.wav"), cfg.audio.sample_rate)
    pipeline = InteractAvatarPipeline.from_pretrained(model_dir)
    result = pipeline(reference, meta.text, speech, steps=args.steps, seed=args.seed,
                      face_box=tuple(meta.face[0]))
    video_path, motion_path = args.out / "demo.mp4", args.out / "demo_motion.mp4"
    result.save(video_path, motion_path)
    summary = {
        "video": str(video_path), "motion": str(motion_path), "text": meta.text, "clip": held_out.clip_id,
        "dataset": str(data_dir), "clips": len(read_manifest(data_dir)), "model": str(model_dir),
        "wall_s": round(time.perf_counter() - started, 2), **{k: round(v, 3) for k, v in result.timings.items()},
    }
    print(json.dumps(summary, indent=1))
    return 0
