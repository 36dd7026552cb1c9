"""`interactavatar generate`: image + sentence + speech -> video with its motion, from a model
directory on this machine or from an endpoint, one request or a file of release test cases."""

from __future__ import annotations

import argparse
from pathlib import Path

from interactavatar.config import MODES


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    generate = subparsers.add_parser("generate", help="image + sentence + speech -> video with its motion")
    generate.add_argument("--model", type=Path, help="model directory (local generation)")
    generate.add_argument("--endpoint", help="a serving endpoint's base URL, e.g. http://127.0.0.1:8080")
    generate.add_argument("--protocol", default="v2", choices=("v2", "v1"), help="with --endpoint")
    generate.add_argument("--request-timeout", type=float, default=1800.0, help="seconds, with --endpoint")
    generate.add_argument("--auth-token-file", type=Path,
                          help="with --endpoint: the endpoint's bearer token (default: $INTERACTAVATAR_AUTH_TOKEN_FILE)")
    generate.add_argument("--cases", type=Path, help="a JSON list of test cases in the public release's format")
    generate.add_argument("--out-dir", type=Path, help="where --cases writes <video_id>.mp4")
    generate.add_argument("--image", type=Path)
    generate.add_argument("--audio", type=Path, help="speech, any rate (resampled to 16 kHz)")
    generate.add_argument("--text")
    generate.add_argument("-o", "--output", type=Path, help="mp4 with the speech muxed in")
    generate.add_argument("--motion-output", type=Path, help="the motion video (default: OUTPUT stem + _motion.mp4)")
    generate.add_argument("--mode", default="interact", choices=MODES)
    generate.add_argument("--pose-video", type=Path, help="motion video driving AIM in --mode pose")
    generate.add_argument("--object-image", type=Path,
                          help="image of the object the sentence names (default: none, a white image)")
    generate.add_argument("--pose-image", type=Path,
                          help="the reference's pose image (default: PIM draws it from the reference)")
    generate.add_argument("--steps", type=int)
    generate.add_argument("--num-frames", type=int)
    generate.add_argument("--text-scale", type=float)
    generate.add_argument("--audio-scale", type=float)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--face-box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    generate.add_argument("--device", default="cpu")
    generate.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from interactavatar.inference.cases import run_generate_command

    return run_generate_command(args)
