"""LoRA joint stages (`train joint --init models:/... --lora-rank R`): they train adapters, the aligner
and the norms on a frozen registered base, write a LoRA version's directory, load merged, chain,
and resume bit-identically."""

import json

import mlflow
import numpy as np
import pytest
import torch
from helpers.registry import register_as_champion
from helpers.train import spec
from safetensors.torch import load_file

from interactavatar.inference.pipeline import InteractAvatarPipeline
from interactavatar.io.model_refs import MODEL_CACHE_ENV, Lineage, read_lineage, resolve_model
from interactavatar.model import lora
from interactavatar.model.bundle import load_bundle
from interactavatar.model.weights import read_model_weights
from interactavatar.train.stages import run_stage

BASE = "models:/interactavatar@champion"


@pytest.fixture
def registered(trained, tmp_path, tracking, monkeypatch):
    """The joint stage's model registered as version 1 (the champion) of a fresh registry, and a
    fresh model cache."""
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "model-cache"))
    assert register_as_champion(trained / "joint", tracking) == "1"


def test_a_lora_stage_trains_adapters_and_writes_a_small_version_that_loads_merged(
        registered, trained, train_dataset, tmp_path, tracking):
    out = tmp_path / "lora"
    run_stage(spec("joint", train_dataset, out, init=BASE, lora_rank=2, lora_alpha=4.0))
    assert {p.name for p in out.iterdir()} - {"checkpoints", "mlflow_run_id", "init", "init.json"} == {
        "config.yaml", lora.ADAPTER_RECORD, "adapter.safetensors", "lineage.json", "training_curve.tsv"}
    assert lora.read_adapter_record(out) == (lora.LoRAConfig(2, 4.0), "models:/interactavatar/1")
    assert read_lineage(out) == Lineage("model", BASE, "1")
    size = (out / "adapter.safetensors").stat().st_size
    assert size < 0.25 * (trained / "joint" / "model.safetensors").stat().st_size

    # Merged: the base moved by exactly alpha / R * B A in the adapted weights, the aligner and
    # norms replaced, every other weight (frozen) the base's to the bit.
    base, adapter = read_model_weights(trained / "joint"), load_file(str(out / "adapter.safetensors"))
    pipeline = InteractAvatarPipeline.from_pretrained(out)
    merged = pipeline.bundle.model.state_dict()
    assert merged.keys() == base.keys()
    full = set(lora.fully_trained(pipeline.bundle.model))
    adapted = {name.removesuffix(".lora_A.weight") for name in adapter if name.endswith(".lora_A.weight")}
    assert len(adapted) == 46 and {"aligner.projections.0.weight", "pim.blocks.0.norm3.weight"} <= full
    for name in base:
        module = name.rsplit(".", 1)[0]
        if name in full:
            assert torch.equal(merged[name], adapter[name]), name
        elif module in adapted and name.endswith(".weight"):
            delta = adapter[f"{module}.lora_B.weight"] @ adapter[f"{module}.lora_A.weight"] * 2.0
            assert delta.abs().max() > 0, name  # B trained away from zero
            torch.testing.assert_close(merged[name], base[name] + delta, rtol=0, atol=1e-6)
        else:
            assert torch.equal(merged[name], base[name]), name
    assert any(not torch.equal(adapter[name], base[name]) for name in full)
    image = np.random.default_rng(0).integers(0, 255, (88, 88, 3), dtype=np.uint8)
    assert pipeline(image, "lift the cup", np.zeros(3200, np.float32), steps=2).video.shape == (5, 88, 88, 3)

    run = mlflow.MlflowClient(tracking).get_run((out / "mlflow_run_id").read_text())
    assert run.data.params["lora.rank"] == "2" and run.data.params["lora.alpha"] == "4.0"
    assert 0 < int(run.data.params["parameters.trainable"]) < 0.3 * int(run.data.params["parameters.total"])

    # Registered, the LoRA version loads through the registry as the same merged model, and a LoRA
    # stage on it chains: its adapter applies to version 2, whose own applies to version 1.
    assert register_as_champion(out, tracking) == "2"
    from_registry = load_bundle(resolve_model("models:/interactavatar/2", tmp_path / "v2").path)
    assert all(torch.equal(value, merged[name]) for name, value in from_registry.model.state_dict().items())
    assert from_registry.lineage == Lineage("model", BASE, "1")
    chained = tmp_path / "chained"
    run_stage(spec("joint", train_dataset, chained, init="models:/interactavatar/2", lora_rank=2))
    assert lora.read_adapter_record(chained)[1] == "models:/interactavatar/2"
    assert read_lineage(chained) == Lineage("model", "models:/interactavatar/2", "2")
    twice = load_bundle(chained).model.state_dict()
    assert twice.keys() == base.keys() and not torch.equal(twice["aim.blocks.0.ffn.0.weight"],
                                                            merged["aim.blocks.0.ffn.0.weight"])
    # Each base was fetched once, into the cache, by registry and version.
    assert sorted(p.name for p in (tmp_path / "model-cache").glob("*/interactavatar/*")) == ["1", "2"]


def test_an_interrupted_lora_stage_resumes_to_a_bit_identical_adapter(registered, train_dataset, tmp_path):
    run_stage(spec("joint", train_dataset, tmp_path / "straight", init=BASE, lora_rank=2, steps=5))
    interrupted = spec("joint", train_dataset, tmp_path / "interrupted", init=BASE, lora_rank=2, steps=5)
    run_stage(interrupted, stop_after=3)  # checkpoint at 2, then step 3 is lost
    assert not (tmp_path / "interrupted" / "adapter.safetensors").exists()
    run_stage(interrupted)
    straight = load_file(str(tmp_path / "straight" / "adapter.safetensors"))
    resumed = load_file(str(tmp_path / "interrupted" / "adapter.safetensors"))
    assert straight.keys() == resumed.keys() and any(".lora_B." in name for name in straight)
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []


def test_a_lora_version_whose_base_cannot_be_fetched_names_it(registered, trained, tmp_path):
    directory = tmp_path / "orphan"
    directory.mkdir()
    (directory / "config.yaml").write_text((trained / "joint" / "config.yaml").read_text())
    (directory / lora.ADAPTER_RECORD).write_text(json.dumps(
        {"rank": 2, "alpha": 2.0, "targets": list(lora.TARGETS), "base": "models:/interactavatar/9"}))
    with pytest.raises(ValueError, match=rf"{directory / lora.ADAPTER_RECORD}: its base models:/interactavatar/9: "
                       r"cannot be fetched from the registry at sqlite:.*version=9\) not found"):
        load_bundle(directory)
    assert not any((tmp_path / "model-cache").rglob("config.yaml"))  # nothing half-written is cached
