"""Every command's --help: an example that parses, each option's default and hidden choices shown.

The walk goes through the real parser, so a command added by any part is checked without a list
here; cli.EXAMPLES must name exactly the commands there are.
"""

import argparse
import contextlib
import io
import shlex
import subprocess
import sys

import pytest

from interactavatar.cli import EXAMPLES, build_parser, command_parsers


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def commands(parser) -> dict[str, argparse.ArgumentParser]:
    """Every parser that runs something (sets `func`), by its words after `interactavatar`."""
    return {" ".join(words): sub for words, sub in command_parsers(parser) if sub.get_default("func")}


def help_of(parser, words: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        parser.parse_args([*words.split(), "--help"])
    assert exited.value.code == 0
    return out.getvalue()


def has_default(action: argparse.Action) -> bool:
    """An option that takes a value and has one when not given (a flag's default is its absence)."""
    return (bool(action.option_strings) and action.nargs != 0
            and action.default not in (None, "", [], argparse.SUPPRESS))


def squeezed(text: str) -> str:
    """Without whitespace: the formatter wraps long defaults anywhere."""
    return "".join(text.split())


def test_every_command_has_an_example_that_parses(parser):
    found = commands(parser)
    assert len(found) >= 20, sorted(found)
    assert sorted(EXAMPLES) == sorted(found), "cli.EXAMPLES names exactly the commands there are"
    for words, sub in found.items():
        text = help_of(parser, words)
        assert f"example:\n  {EXAMPLES[words]}" in text, words
        example = shlex.split(EXAMPLES[words])
        assert example[0] == "interactavatar" and " ".join(example[1:]).startswith(words)
        args = parser.parse_args(example[1:])
        assert args.func is sub.get_default("func"), f"{words}: its example runs another command"


def test_every_option_with_a_default_shows_it_and_hidden_choices_are_listed(parser):
    checked = 0
    for words, sub in commands(parser).items():
        text = squeezed(help_of(parser, words))
        for action in sub._actions:
            if has_default(action) and "default" not in (action.help or "").lower():
                assert squeezed(f"(default: {action.default})") in text, f"{words} {action.option_strings[0]}"
                checked += 1
            if action.choices is not None and action.metavar is not None:
                assert squeezed(f"(choices: {', '.join(map(str, action.choices))})") in text, words
            if action.choices is not None and action.metavar is None:
                assert "{" + ",".join(map(str, action.choices)) + "}" in text, words
    assert checked > 50, "the walk reached the options"


def test_flags_and_absent_options_show_no_default(parser):
    text = help_of(parser, "train joint")
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith("--")}
    assert "default" not in lines["--gradient-checkpointing"]
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text
    assert "(default: 100)" in lines["--steps"]


@pytest.mark.slow
def test_the_installed_command_prints_help_with_an_example():
    done = subprocess.run([sys.executable, "-m", "interactavatar.cli", "data", "synth", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "example:\n  interactavatar data synth --out data/synth" in done.stdout
    assert "(default: 64)" in done.stdout  # --num-clips
