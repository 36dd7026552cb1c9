"""Warm start (`--init MODEL`): a stage trains on from a whole model instead of its stage inputs,
and the model it writes names that model as its parent."""

import json

import pytest
from helpers.metrics import clips, write_metrics
from helpers.train import largest_difference, spec

from interactavatar.cli import main
from interactavatar.io.model_refs import Lineage, read_lineage
from interactavatar.model.weights import read_model_weights
from interactavatar.train.stages import StageSpec, run_stage


def _flags(data, out, *extra):
    return ["--preset", "tiny", "--data", str(data), "--out", str(out), "--steps", "2", "--batch-size", "2", *extra]


def test_a_stage_started_from_a_model_starts_from_its_weights(trained, train_dataset, tmp_path, tracking):
    init = trained / "joint"
    # A zero learning rate changes nothing: every tensor, the aligner's included, is the init model's.
    assert main(["train", "joint", *_flags(train_dataset, tmp_path / "still", "--lr", "0", "--init", str(init))]) == 0
    assert largest_difference(read_model_weights(tmp_path / "still"), read_model_weights(init)) == 0
    assert read_lineage(tmp_path / "still") == Lineage("model", str(init))
    assert read_lineage(init) == Lineage("scratch")
    # PIM alone trains on from the init model; AIM and the aligner stay the init model's.
    assert main(["train", "pim", *_flags(train_dataset, tmp_path / "pim", "--lr", "1e-2", "--init", str(init))]) == 0
    ours, theirs = read_model_weights(tmp_path / "pim"), read_model_weights(init)
    assert largest_difference({k: v for k, v in ours.items() if k.startswith("pim.")},
                              {k: v for k, v in theirs.items() if k.startswith("pim.")}) > 0
    assert largest_difference({k: v for k, v in ours.items() if not k.startswith("pim.")},
                              {k: v for k, v in theirs.items() if not k.startswith("pim.")}) == 0
    assert not (tmp_path / "pim" / "init").exists() or not any((tmp_path / "pim" / "init").iterdir())


def test_init_replaces_the_stage_inputs_and_never_the_vae_stage(trained, train_dataset, tmp_path):
    with pytest.raises(ValueError, match="--init replaces --vae; give one or the other"):
        StageSpec("audio", "tiny", train_dataset, tmp_path, init=str(trained / "joint"), vae=trained / "vae")
    with pytest.raises(ValueError, match="train vae: --init: a warm start takes its VAE from the init model"):
        StageSpec("vae", "tiny", train_dataset, tmp_path, init=str(trained / "joint"))
    with pytest.raises(ValueError, match="--pim \\(the pim stage's output directory\\) is required"):
        StageSpec("joint", "tiny", train_dataset, tmp_path, vae=trained / "vae", audio=trained / "audio")
    with pytest.raises(ValueError, match="--injection last, but the init model .* was trained with residual"):
        run_stage(spec("joint", train_dataset, tmp_path / "other", init=str(trained / "joint"), injection="last"))


@pytest.mark.integration
def test_a_registry_alias_is_pinned_to_the_version_it_named(trained, train_dataset, tmp_path, tracking, capsys):
    from interactavatar.registry.mlflow import lineage, register

    first = register(trained / "joint", write_metrics(tmp_path / "m1.json", clips(0.5), clips(0.0), data_rev=""),
                     tracking_uri=tracking)
    out = tmp_path / "warm"
    warm = spec("joint", train_dataset, out, init="models:/interactavatar@champion", steps=2)
    run_stage(warm, stop_after=1)  # preempted after one step
    assert json.loads((out / "init.json").read_text())["pinned"] == f"models:/interactavatar/{first.version}"
    # The alias moves on before the resume: the resumed stage keeps the version it started from.
    better = write_metrics(tmp_path / "m2.json", clips(0.9), clips(0.5), baseline=first.version, data_rev="")
    assert register(trained / "joint", better, tracking_uri=tracking).promoted
    run_stage(warm)
    assert read_lineage(out) == Lineage("model", "models:/interactavatar@champion", first.version)

    # Registered, the warm-started model's lineage runs back through the version it started from.
    third = register(out, write_metrics(tmp_path / "m3.json", clips(0.9), clips(0.9), baseline="2", data_rev=""),
                     tracking_uri=tracking)
    assert [entry["version"] for entry in lineage(third.version, tracking_uri=tracking)] == [third.version, first.version]
    assert main(["registry", "lineage", third.version]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"interactavatar version {third.version}: trained on data ")
    assert printed[1].startswith(f"interactavatar version {first.version}: ") and printed[-1] == "  from scratch"
