"""`interactavatar model init` (a randomly initialised model directory of a preset) and
`interactavatar model import-release` (the public release's checkpoint as a model directory)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="model directories")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    init = model_commands.add_parser("init", help="write a randomly initialised model directory")
    init.add_argument("--preset", default="demo", help="tiny, demo or paper")
    init.add_argument("--out", required=True, type=Path)
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(func=run_init)

    release = model_commands.add_parser(
        "import-release", help="convert the public InteractAvatar release's files into a model directory",
        description="Every command then takes the directory: generate, serve, evaluate, register, and "
                    "training's initial weights. Example: interactavatar model import-release --transformer "
                    "ckpt/interact-avatar --vae ckpt/Wan2.2_VAE.pth --umt5 ckpt/models_t5_umt5-xxl-enc-bf16.pth "
                    "--tokenizer ckpt/google/umt5-xxl --wav2vec2 ckpt/wav2vec2-base --out models/release")
    release.add_argument("--transformer", required=True, type=Path,
                         help="folder with diffusion_pytorch_model.safetensors (or its .index.json and shards)")
    release.add_argument("--vae", required=True, type=Path, help="Wan2.2_VAE.pth")
    release.add_argument("--umt5", required=True, type=Path, help="the umT5 encoder .pth")
    release.add_argument("--tokenizer", required=True, type=Path, help="the umT5 tokenizer folder")
    release.add_argument("--wav2vec2", required=True, type=Path, help="the wav2vec2-base folder")
    release.add_argument("--out", required=True, type=Path)
    release.add_argument("--release-config", type=Path,
                         help="JSON of the release's model arguments (default: the 5B values); optional entries "
                              '"audio_proj" (AudioProjModel widths), "vae" ({"kwargs", "latent_mean", '
                              '"latent_std"}) and "sizes" (video_size, motion_size, num_frames, size_rule)')
    release.add_argument("--max-shard-gb", type=float, default=2.0, help="largest weight shard written (default: 2)")
    release.set_defaults(func=run_import_release)


def run_import_release(args: argparse.Namespace) -> int:
    import json

    from interactavatar.model.release import import_release

    release_config = {}
    if args.release_config:
        try:
            release_config = json.loads(args.release_config.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{args.release_config}: not a readable JSON file ({err})") from err
    parts = {name: release_config.pop(name, None) for name in ("audio_proj", "vae", "sizes")}
    out = import_release(args.transformer, args.vae, args.umt5, args.tokenizer, args.wav2vec2, args.out,
                         release_config, parts["audio_proj"], parts["vae"], parts["sizes"],
                         max_shard_bytes=int(args.max_shard_gb * (1 << 30)))
    print(json.dumps({"model": str(out)}))
    return 0


def run_init(args: argparse.Namespace) -> int:
    from interactavatar.model.bundle import init_model_directory

    print(init_model_directory(args.preset, args.out, args.seed))
    return 0
