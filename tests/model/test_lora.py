"""LoRA with PEFT (model/lora.py): what is adapted and what trains, the merged model computes what
base + adapter computes, and adapter.json is checked by field."""

import copy
import json

import pytest
import torch
from helpers.model import make_inputs, randomize_heads

from interactavatar.config import preset
from interactavatar.io.model_refs import ADAPTER_WEIGHTS, find_model_dir
from interactavatar.model import InteractAvatar, lora


@pytest.fixture
def base():
    torch.manual_seed(0)
    model = randomize_heads(InteractAvatar(preset("tiny"))).eval()
    for projection in model.aligner.projections:  # a trained aligner: PIM reaches AIM
        projection.weight.data.normal_(std=0.1)
    return model


def _adapted(base: InteractAvatar, rank: int = 4, alpha: float | None = 8.0) -> InteractAvatar:
    """A copy of `base` with adapters whose both halves are random (B starts at zero: the forward
    would not see them), and its aligner and norms moved, as after training."""
    model = lora.inject(copy.deepcopy(base), lora.LoRAConfig(rank, alpha))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


def test_adapters_cover_both_streams_and_only_adapters_aligner_and_norms_train(base):
    model = _adapted(base)
    adapted = set(lora.adapted(model))
    for stream in ("pim", "aim"):
        for layer in ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.o",
                      "ffn.0", "ffn.2"):
            assert f"{stream}.blocks.1.{layer}" in adapted
    assert {"aim.audio_blocks.0.q_linear", "aim.audio_blocks.0.kv_linear", "aim.audio_blocks.0.proj"} <= adapted
    assert not any(name.startswith(("aligner", "pim.head", "aim.audio_projection")) for name in adapted)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    full = set(lora.fully_trained(model))
    assert {"aligner.projections.0.weight", "pim.blocks.0.norm3.weight", "aim.blocks.1.self_attn.norm_q.weight",
            "aim.audio_blocks.0.norm.bias"} <= full
    assert trainable == full | {name for name in trainable if ".lora_" in name}
    assert "pim.blocks.0.self_attn.q.base_layer.weight" not in trainable
    assert "pim.blocks.0.ffn.0.base_layer.bias" not in trainable
    assert sum(p.numel() for name, p in model.named_parameters() if name in trainable) < 0.2 * sum(
        p.numel() for p in base.parameters())


def test_merged_model_computes_base_plus_adapter_and_is_keyed_as_the_base(base, tmp_path):
    model = _adapted(base)
    inputs = make_inputs(preset("tiny"))
    with torch.no_grad():
        wrapped = model(**inputs)
        unadapted = base(**inputs)
    lora.save_adapter(model, lora.LoRAConfig(4, 8.0), "models:/interactavatar/3", tmp_path)
    merged = lora.merge_adapter(copy.deepcopy(base), tmp_path).eval()
    with torch.no_grad():
        merged_out = merged(**inputs)
    for ours, theirs, before in zip(merged_out, wrapped, unadapted, strict=True):
        assert not torch.allclose(theirs, before, atol=1e-3)  # the adapter changes the output: the test can fail
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert type(merged) is InteractAvatar and not hasattr(merged, "peft_config")
    assert list(merged.state_dict()) == list(base.state_dict())
    assert all(p.requires_grad for p in merged.parameters())
    # The merge is PEFT's W + alpha / R * B A, the aligner and norms replaced whole.
    weights = dict(model.named_parameters())
    prefix = "aim.blocks.0.ffn.2"
    delta = weights[f"{prefix}.lora_B.default.weight"] @ weights[f"{prefix}.lora_A.default.weight"] * (8.0 / 4)
    torch.testing.assert_close(merged.state_dict()[f"{prefix}.weight"], base.state_dict()[f"{prefix}.weight"] + delta)
    assert torch.equal(merged.state_dict()["aligner.projections.1.weight"], weights["aligner.projections.1.weight"])


def test_adapter_directory_is_a_model_directory_and_its_record_is_checked_by_field(base, tmp_path):
    lora.save_adapter(_adapted(base), lora.LoRAConfig(4), "models:/interactavatar/3", tmp_path / "m")
    (tmp_path / "m" / "config.yaml").write_text("{}")
    assert find_model_dir(tmp_path) == tmp_path / "m"
    record = tmp_path / "m" / lora.ADAPTER_RECORD
    assert lora.read_adapter_record(tmp_path / "m") == (lora.LoRAConfig(4, 4.0), "models:/interactavatar/3")
    good = json.loads(record.read_text())
    for change, message in [({"base": "models:/interactavatar@champion"}, "field 'base'.*not a pinned registry"),
                            ({"base": "/models/joint"}, "field 'base'.*models:/NAME/VERSION"),
                            ({"rank": 0}, "field 'rank' must be a positive integer, got 0"),
                            ({"alpha": "big"}, "field 'alpha' must be a positive number"),
                            ({"targets": "q"}, "field 'targets' must be a list"),
                            ({"extra": 1}, r"unknown field\(s\) \['extra'\]")]:
        record.write_text(json.dumps(good | change))
        with pytest.raises(ValueError, match=f"{record}: {message}"):
            lora.read_adapter_record(tmp_path / "m")
    record.write_text(json.dumps({k: v for k, v in good.items() if k != "base"}))
    with pytest.raises(ValueError, match=f"{record}: field 'base' missing"):
        lora.read_adapter_record(tmp_path / "m")
    record.write_text("{rank")
    with pytest.raises(ValueError, match=f"{record}: not valid JSON"):
        lora.read_adapter_record(tmp_path / "m")
    # The record and the weights disagree: another rank.
    record.write_text(json.dumps(good | {"rank": 2}))
    with pytest.raises(ValueError, match=f"{tmp_path / 'm' / ADAPTER_WEIGHTS}: the adapter does not fit"):
        lora.merge_adapter(copy.deepcopy(base), tmp_path / "m")
    with pytest.raises(ValueError, match="save_adapter: base 'models:/interactavatar@champion'"):
        lora.save_adapter(base, lora.LoRAConfig(4), "models:/interactavatar@champion", tmp_path / "n")


def test_the_base_cache_keeps_the_copy_published_first(tmp_path):
    """Two processes fetching one base at once: the second copy is discarded, not swapped in under
    a reader of the first (io.files.atomic_directory's keep_existing)."""
    from interactavatar.io.files import atomic_directory

    target = tmp_path / "cache" / "interactavatar" / "1"
    for text in ("first", "second"):
        with atomic_directory(target, keep_existing=True) as staging:
            (staging / "config.yaml").write_text(text)
    assert (target / "config.yaml").read_text() == "first" and list(target.parent.iterdir()) == [target]
