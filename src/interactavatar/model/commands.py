"""`interactavatar model init`: a randomly initialised model directory of a preset."""

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



def run_init(args: argparse.Namespace) -> int:
    from interactavatar.model.bundle import init_model_directory

    print(init_model_directory(args.preset, args.out, args.seed))
    return 0
