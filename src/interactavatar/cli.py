"""`interactavatar` command line: one subcommand group per part of the system.

Each part registers its own subcommands (`add_commands(subparsers)`) so that this file stays a
table of contents. What every command's help shares is applied here, once, to the finished parser:
the formatter that shows each option's default and choices, and one example per command (EXAMPLES),
so that a part adding a command cannot forget either (tests/test_cli_help.py walks them all).
"""

from __future__ import annotations

import argparse
import copy
import errno
import importlib
import sys
from collections.abc import Iterator

from interactavatar.io.errors import UnavailableURI

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

# One example per command (a parser that sets `func`), keyed by its words after `interactavatar`;
# the help prints it under "example:". Each one parses (the help test checks), so it stays current.
EXAMPLES = {
    "model init": "interactavatar model init --preset demo --out models/demo",
    "model import-release": "interactavatar model import-release --transformer ckpt/interact-avatar "
                            "--vae ckpt/Wan2.2_VAE.pth --umt5 ckpt/umt5-xxl-enc.pth --tokenizer ckpt/umt5-xxl "
                            "--wav2vec2 ckpt/wav2vec2-base --out models/release",
    "generate": "interactavatar generate --model models/demo --image ref.png --audio speech.wav "
                '--text "The woman lifts the red cup on the left with her right hand" -o out.mp4',
    "data synth": "interactavatar data synth --out data/synth --num-clips 64 --seed 0",
    "data validate": "interactavatar data validate data/synth --report reports/data-validation.html",
    "data ingest": "interactavatar data ingest --videos raw/ --out data/real",
    "train vae": "interactavatar train vae --preset demo --data data/synth --out runs/vae",
    "train pim": "interactavatar train pim --preset demo --data data/synth --vae runs/vae --out runs/pim",
    "train audio": "interactavatar train audio --preset demo --data data/synth --vae runs/vae --out runs/audio",
    "train joint": "interactavatar train joint --preset demo --data data/synth --vae runs/vae --pim runs/pim "
                   "--audio runs/audio --out runs/joint",
    "evaluate": "interactavatar evaluate --model runs/joint --data data/synth --out eval/ "
                "--baseline models:/interactavatar@champion",
    "register": "interactavatar register --model runs/joint --metrics eval/metrics.json",
    "registry rollback": "interactavatar registry rollback",
    "registry policy": 'interactavatar registry policy set --gate grounding_iou:max:0.02 --reason "a stricter bar"',
    "registry resolve": "interactavatar registry resolve models:/interactavatar@champion",
    "registry lineage": "interactavatar registry lineage champion",
    "pipeline compile": "interactavatar pipeline compile",
    "pipeline run": "interactavatar pipeline run --local --data-repo data-repo --data-rev v1 --param preset=tiny",
    "pipeline submit": "interactavatar pipeline submit --host https://kfp.example "
                       "--data-repo https://git.example/data.git --data-rev v3",
    "pipeline schedule": 'interactavatar pipeline schedule --host https://kfp.example '
                         '--data-repo https://git.example/data.git --cron "0 0 3 * * *"',
    "trainjob node": "interactavatar trainjob node --input data=s3://dvc/data --output out=s3://models/run "
                     "-- interactavatar train joint --data data --out out",
    "demo": "interactavatar demo --out demo_out",
    "demo retrain": "interactavatar demo retrain --out demo_out",
    "serve": "interactavatar serve --model models:/interactavatar@champion --port 8080",
    "serve manifest": "interactavatar serve manifest --gpu 0",  # no storage URI: the deploy step sets it
}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, plus each option's default (when it has one worth showing) and its
    choices (when a metavar hides them); a text laid out by hand (it holds line breaks: an example,
    a numbered list) keeps its lines."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help:  # argparse prints no help line for an option without help text: give it one
            extra = self._get_help_string(action)
            if extra:
                action = copy.copy(action)
                action.help = extra
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.choices is not None and action.metavar is not None and "(choices:" not in text:
            text += f" (choices: {', '.join(map(str, action.choices))})"
        # A default the author already wrote out ("(default: the 5B values)") is not repeated.
        if "%(default)" in text or "default" in text.lower() or not _shows_default(action):
            return text
        return f"{text} (default: %(default)s)".lstrip()

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _shows_default(action: argparse.Action) -> bool:
    """Whether the default means something to print: not for flags (store_true), nor for an option
    that is simply absent by default (None, "", [])."""
    if isinstance(action, argparse._StoreConstAction):  # store_true and store_false too: a flag
        return False
    if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
        return False  # a required positional has no default
    return action.default not in (None, "", [], argparse.SUPPRESS)


def command_parsers(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
                    ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under `parser` (itself included) with the words that reach it."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_parsers(sub, (*words, name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interactavatar", description=__doc__.splitlines()[0])
    # Not dest="command": `trainjob node` takes its training command in `args.command`.
    subparsers = parser.add_subparsers(dest="part", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    for words, sub in command_parsers(parser):
        sub.formatter_class = HelpFormatter
        # The deepest parser's default wins: errors name the whole command ("registry resolve").
        sub.set_defaults(command_words=" ".join(words))
        example = EXAMPLES.get(" ".join(words))
        if example:
            sub.epilog = f"example:\n  {example}\n"
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UnavailableURI as err:  # a reference or server to fix, not a bug: the message names it
        print(f"interactavatar {args.command_words}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:  # bad input: the message names the file or field
        print(f"interactavatar {args.command_words}: error: {err}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError) as err:  # a run stopped with its state kept: a loss gone NaN, a full disk
        if isinstance(err, OSError) and err.errno != errno.ENOSPC:
            raise
        print(f"interactavatar {args.command_words}: stopped: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        if not _is_missing_registry_entry(err):
            raise
        print(f"interactavatar {args.command_words}: error: {_one_line(err)}", file=sys.stderr)
        return 1


def _is_missing_registry_entry(err: Exception) -> bool:
    """An MLflow "not found" (a registered model or version a command looked up by name), which
    the message names. Checked without importing mlflow: when it raised, it is imported."""
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    return (mlflow_exceptions is not None and isinstance(err, mlflow_exceptions.MlflowException)
            and err.error_code == "RESOURCE_DOES_NOT_EXIST")


def _one_line(err: Exception) -> str:
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
