"""`interactavatar` command line: one subcommand group per part of the system.

Each part registers its own subcommands (`add_commands(subparsers)`) so that this file stays a
table of contents.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

# Modules that define `add_commands(subparsers)`; each subcommand sets `func(args) -> int`.
COMMAND_MODULES = (
    "interactavatar.model.commands",
    "interactavatar.inference.commands",
    "interactavatar.data.commands",
    "interactavatar.train.commands",
    "interactavatar.evaluate.commands",
    "interactavatar.registry.commands",
    "interactavatar.pipeline.commands",
    "interactavatar.cluster.trainjob",
    "interactavatar.pipeline.demo",
    "interactavatar.serve.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interactavatar", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:  # bad input: the message names the file or field
        print(f"interactavatar {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError) as err:  # a run stopped with its state kept: a loss gone NaN, a full disk
        if isinstance(err, OSError) and err.errno != errno.ENOSPC:
            raise
        print(f"interactavatar {args.command}: stopped: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
