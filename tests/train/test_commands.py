"""The stage table (`train.stages.STAGES`) and the train command built from it: StageSpec's
validation, the per-stage parsers, and `spec_to_argv`, the inverse of `spec_from_args`."""

import argparse
import dataclasses
from pathlib import Path

import pytest

from interactavatar.model import lora
from interactavatar.train.commands import add_commands, spec_from_args, spec_to_argv
from interactavatar.train.curriculum import Curriculum
from interactavatar.train.engine import EngineConfig
from interactavatar.train.stages import STAGES, StageSpec

INPUT_FLAGS = ("--vae", "--pim", "--audio")
# The settings only one stage's command carries.
STAGE_SETTINGS = {"vae": {"vae_motion_steps": 3}, "pim": {"curriculum": Curriculum(0.0, 1.0, 2.5)},
                  "joint": {"injection": "add"}}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="interactavatar")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def full_spec(stage: str, **settings) -> StageSpec:
    """`stage` with every setting the command line carries away from its default."""
    return StageSpec(stage=stage, preset="tiny", data=Path("/data/clips"), out=Path("/runs/out"), steps=7, seed=3,
                     checkpoint_every=5, log_every=2, gradient_checkpointing=True, data_rev="abc123",
                     data_repo="https://git.example/data.git", data_path="data/synth", parent_run_id="run-9",
                     engine=EngineConfig(micro_batch_size=3, gradient_accumulation_steps=2, learning_rate=3e-4,
                                         warmup_steps=4, zero_stage=1),
                     **{name: Path(f"/models/{name}") for name in STAGES[stage].needs},
                     **STAGE_SETTINGS.get(stage, {}), **settings)


def test_the_table_names_each_stages_inputs_and_feature_streams():
    assert {name: (stage.needs, set(stage.streams)) for name, stage in STAGES.items()} == {
        "vae": ((), set()),
        "pim": (("vae",), {"motion"}),
        "audio": (("vae",), {"video", "audio"}),
        "joint": (("vae", "pim", "audio"), {"video", "motion", "audio"}),
    }
    assert all(name == stage.name for name, stage in STAGES.items())


@pytest.mark.parametrize("stage", list(STAGES))
def test_spec_to_argv_round_trips_every_stage(stage):
    spec = full_spec(stage)
    argv = spec_to_argv(spec)
    assert argv[:2] == ["train", stage]
    assert argv[argv.index("--lr") + 1] == "0.0003" and argv[argv.index("--data") + 1] == "/data/clips"
    # Exactly the inputs the stage needs, in the table's order.
    assert [argv[i + 1] for i, arg in enumerate(argv) if arg in INPUT_FLAGS] == [
        f"/models/{name}" for name in STAGES[stage].needs]
    assert spec_from_args(parse(argv)) == spec


def test_spec_to_argv_writes_the_stage_options_and_the_flags_in_a_fixed_order():
    argv = spec_to_argv(full_spec("joint"))
    assert argv[argv.index("--zero-stage"):] == [
        "--zero-stage", "1", "--vae", "/models/vae", "--pim", "/models/pim", "--audio", "/models/audio",
        "--injection", "add", "--gradient-checkpointing", "--data-rev", "abc123", "--data-repo", "https://git.example/data.git",
        "--data-path", "data/synth", "--parent-run-id", "run-9"]
    argv = spec_to_argv(full_spec("pim"))
    assert argv[argv.index("--curriculum") + 1] == "0.0,1.0,2.5"


@pytest.mark.parametrize(("stage", "settings", "lost"), [
    ("vae", {"vae": Path("/models/vae")}, "vae"),  # an input the stage does not take
    ("audio", {"injection": "add"}, "injection"),  # --injection is joint's alone
    ("pim", {"split": "val", "track": False, "engine": EngineConfig(weight_decay=0.1)},
     "engine.weight_decay, split, track"),
])
def test_spec_to_argv_refuses_by_name_what_the_command_line_cannot_carry(stage, settings, lost):
    spec = dataclasses.replace(full_spec(stage), **settings)
    with pytest.raises(ValueError, match=rf"^train {stage}: {lost} cannot be passed to `interactavatar train`"):
        spec_to_argv(spec)


def test_stage_spec_requires_the_inputs_the_table_names():
    with pytest.raises(ValueError, match=r"^train joint: --pim \(the pim stage's output directory\) is required"):
        StageSpec(stage="joint", preset="tiny", data=Path("d"), out=Path("o"), vae=Path("v"), audio=Path("a"))
    with pytest.raises(ValueError, match=r"choose one of \('vae', 'pim', 'audio', 'joint'\)$"):
        StageSpec(stage="dit", preset="tiny", data=Path("d"), out=Path("o"))


def test_a_new_table_entry_is_validated_and_gets_its_command(monkeypatch):
    """Nothing but the table knows the stages: an entry added to it is a stage everywhere."""
    monkeypatch.setitem(STAGES, "probe", dataclasses.replace(STAGES["audio"], name="probe", needs=("pim",)))
    with pytest.raises(ValueError, match=r"^train probe: --pim "):
        StageSpec(stage="probe", preset="tiny", data=Path("d"), out=Path("o"))
    with pytest.raises(ValueError, match=r"choose one of \('vae', 'pim', 'audio', 'joint', 'probe'\)$"):
        StageSpec(stage="dit", preset="tiny", data=Path("d"), out=Path("o"))

    args = parse(["train", "probe", "--data", "d", "--out", "o", "--init", "m"])  # --init or --pim
    assert args.pim is None and args.init == "m"
    spec = StageSpec(stage="probe", preset="tiny", data=Path("d"), out=Path("o"), pim=Path("p"))
    assert spec_from_args(parse(spec_to_argv(spec))) == spec


def test_a_lora_stage_round_trips_and_is_refused_where_its_base_could_change(capsys):
    spec = dataclasses.replace(full_spec("joint"), vae=None, pim=None, audio=None,
                               init="models:/interactavatar@champion", lora_rank=8, lora_alpha=16.0)
    argv = spec_to_argv(spec)
    assert argv[argv.index("--lora-rank"):argv.index("--lora-rank") + 4] == ["--lora-rank", "8", "--lora-alpha", "16.0"]
    assert spec_from_args(parse(argv)) == spec and spec.lora_config().alpha == 16.0
    assert dataclasses.replace(spec, lora_alpha=None).lora_config() == lora.LoRAConfig(8, 8.0)
    joint = dict(stage="joint", preset="tiny", data=Path("d"), out=Path("o"))
    with pytest.raises(ValueError, match=r"^train joint: --lora-rank needs --init models:/NAME@ALIAS or "
                                         r"models:/NAME/VERSION: an adapter is stored against its base"):
        StageSpec(**joint, lora_rank=4)
    for init in ("/models/joint", "s3://bucket/models/joint"):
        with pytest.raises(ValueError, match=rf"^train joint: --lora-rank: --init {init} can change after training"):
            StageSpec(**joint, init=init, lora_rank=4)
    with pytest.raises(ValueError, match=r"^train pim: --lora-rank: only the joint stage trains LoRA adapters"):
        StageSpec(**joint | {"stage": "pim"}, init="models:/m/1", lora_rank=4)
    with pytest.raises(ValueError, match=r"^train joint: --lora-alpha without --lora-rank"):
        StageSpec(**joint, init="models:/m/1", lora_alpha=2.0)
    with pytest.raises(ValueError, match=r"--lora-rank 0, --lora-alpha None: lora: rank 0 must be a positive"):
        StageSpec(**joint, init="models:/m/1", lora_rank=0)
    with pytest.raises(SystemExit):  # the other stages' commands have no such option
        parse(["train", "pim", "--data", "d", "--out", "o", "--init", "models:/m/1", "--lora-rank", "4"])
    assert "unrecognized arguments: --lora-rank 4" in capsys.readouterr().err
