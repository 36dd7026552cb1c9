"""umT5 as the release computes it (fixtures in `release-oracle/umt5`), the key converter's
strictness, and the release's prompt cleaning. Every size comes from the fixture's config.json."""

import pytest
import torch
from helpers.release import Oracle, assert_close

from interactavatar.config import TextConfig
from interactavatar.model.text import (
    TextEncoder,
    clean_prompt,
    umt5_config,
    umt5_config_from_release,
    umt5_key_map,
    umt5_state_dict_from_release,
)


def _release_umt5(oracle: Oracle, attention: str | None = None):
    """UMT5EncoderModel at the fixture's sizes, holding its weights (loaded strictly); attention:
    transformers' attention implementation, None for its default (what TextEncoder gets)."""
    from transformers import UMT5EncoderModel

    sizes = oracle.config["T5Encoder_kwargs"]
    model = UMT5EncoderModel(umt5_config_from_release(sizes)).eval()
    if attention is not None:
        model.set_attn_implementation(attention)
    weights = umt5_state_dict_from_release(oracle.weights, sizes["num_layers"], source="weights.safetensors")
    model.load_state_dict(weights, strict=True)
    return model


def _tolerance(oracle: Oracle) -> dict:
    return {"atol": oracle.config["tolerance"]["atol"], "rtol": oracle.config["tolerance"]["rtol"]}


def _lengths(mask: torch.Tensor) -> list[int]:
    """Each prompt's real length as the release counts it: its mask entries > 0."""
    return mask.gt(0).sum(dim=1).tolist()


@pytest.mark.release_parity
@pytest.mark.parametrize("attention", [None, "eager"])
def test_umt5_encoder_matches_the_release(attention):
    oracle = Oracle("umt5")
    config, ids, mask = oracle.config, oracle.inputs["ids"], oracle.inputs["mask"]
    assert ids.shape == mask.shape == (len(config["prompt_lengths_incl_eos"]), config["text_len"])
    assert _lengths(mask) == config["prompt_lengths_incl_eos"]
    model = _release_umt5(oracle, attention)
    if attention is not None:
        assert model.config._attn_implementation == attention
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    full = oracle.outputs["encoder_out_full"]
    assert hidden.shape == full.shape
    contexts = sorted(name for name in oracle.outputs if name.startswith("context."))
    assert contexts == sorted(f"context.{i}" for i in range(ids.shape[0]))
    for i, length in enumerate(_lengths(mask)):
        real = mask[i] > 0
        assert_close(f"encoder_out_full[{i}] where mask is 1", hidden[i][real], full[i][real], **_tolerance(oracle))
        assert_close(f"context.{i}", hidden[i, :length], oracle.outputs[f"context.{i}"], **_tolerance(oracle))


class _FixtureTokenizer:
    """Stands in for the real umT5 tokenizer, which the fixture does not ship: hands back the
    fixture's ids and mask, and records the (cleaned) prompts it was given."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor):
        self.ids, self.mask, self.seen = ids, mask, None

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        assert (padding, truncation, max_length, return_tensors) == ("max_length", True, self.ids.shape[1], "pt")
        self.seen = list(texts)
        return {"input_ids": self.ids, "attention_mask": self.mask}


@pytest.mark.release_parity
def test_text_encoder_features_are_the_release_context_zero_padded():
    """TextEncoder's output is what the DiT receives in the release: each prompt's context (cut to
    its real length) followed by exact zeros up to the padded length."""
    oracle = Oracle("umt5")
    ids, mask = oracle.inputs["ids"], oracle.inputs["mask"]
    tokenizer = _FixtureTokenizer(ids, mask)
    cfg = TextConfig(kind="umt5", dim=oracle.config["T5Encoder_kwargs"]["dim"], max_tokens=oracle.config["text_len"])
    encoder = TextEncoder(_release_umt5(oracle), tokenizer, cfg)
    prompts = [f"  prompt\t{i}  \u201cquoted\u201d " for i in range(ids.shape[0])]
    features, real = encoder(prompts)
    assert tokenizer.seen == [f'prompt {i} "quoted"' for i in range(ids.shape[0])]
    assert features.shape == (ids.shape[0], cfg.max_tokens, cfg.dim)
    for i, length in enumerate(_lengths(mask)):
        assert_close(f"context.{i}", features[i, :length], oracle.outputs[f"context.{i}"], **_tolerance(oracle))
        assert torch.equal(features[i, length:], torch.zeros_like(features[i, length:]))
        assert real[i].tolist() == [True] * length + [False] * (cfg.max_tokens - length)


@pytest.mark.release_parity
def test_umt5_directory_loads_as_umt5(tmp_path):
    """A directory as the importer writes it (save_pretrained of the converted model) loads back
    through TextConfig(kind="umt5") as a UMT5EncoderModel with the same weights."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel, UMT5EncoderModel

    oracle = Oracle("umt5")
    model = _release_umt5(oracle)
    model.save_pretrained(str(tmp_path / "umt5"))
    ByT5Tokenizer().save_pretrained(str(tmp_path / "umt5"))
    sizes = oracle.config["T5Encoder_kwargs"]
    loaded = TextEncoder.from_config(TextConfig(kind="umt5", path=str(tmp_path / "umt5"), dim=sizes["dim"]))
    assert isinstance(loaded.model, UMT5EncoderModel)
    ours = loaded.model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(ours[name], tensor), name

    T5EncoderModel(T5Config(vocab_size=8, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2)).save_pretrained(
        str(tmp_path / "t5"))
    with pytest.raises(ValueError, match="per-layer position bias"):
        TextEncoder.from_config(TextConfig(kind="umt5", path=str(tmp_path / "t5")))


def _release_like_state_dict(num_layers: int) -> dict[str, torch.Tensor]:
    return {key: torch.zeros(1) for key in umt5_key_map(num_layers)}


@pytest.mark.parametrize("num_layers", [1, 3])
def test_converter_maps_every_key_once(num_layers):
    release = _release_like_state_dict(num_layers)
    converted = umt5_state_dict_from_release(release, num_layers)
    # Every UMT5EncoderModel key at these sizes, each from exactly one release tensor.
    from transformers import UMT5EncoderModel

    config = umt5_config(vocab=4, dim=4, dim_attn=4, dim_ffn=8, num_heads=2, num_layers=num_layers, num_buckets=4)
    assert set(converted) == set(UMT5EncoderModel(config).state_dict())
    assert converted["encoder.embed_tokens.weight"] is release["token_embedding.weight"]
    assert converted["shared.weight"] is release["token_embedding.weight"]
    last = num_layers - 1
    assert (converted[f"encoder.block.{last}.layer.0.SelfAttention.relative_attention_bias.weight"]
            is release[f"blocks.{last}.pos_embedding.embedding.weight"])
    assert converted[f"encoder.block.{last}.layer.1.DenseReluDense.wi_0.weight"] is release[f"blocks.{last}.ffn.gate.0.weight"]
    assert converted[f"encoder.block.{last}.layer.1.DenseReluDense.wi_1.weight"] is release[f"blocks.{last}.ffn.fc1.weight"]
    assert converted[f"encoder.block.{last}.layer.1.DenseReluDense.wo.weight"] is release[f"blocks.{last}.ffn.fc2.weight"]


def test_converter_rejects_a_missing_key_naming_it_and_the_file():
    release = _release_like_state_dict(2)
    del release["blocks.1.pos_embedding.embedding.weight"]
    with pytest.raises(ValueError, match=r"umt5\.pth: .*missing key 'blocks\.1\.pos_embedding\.embedding\.weight'"):
        umt5_state_dict_from_release(release, 2, source="umt5.pth")


def test_converter_rejects_an_extra_key_naming_it():
    release = _release_like_state_dict(2)
    release["pos_embedding.embedding.weight"] = torch.zeros(1)  # a shared bias: not the release's umT5
    with pytest.raises(ValueError, match=r"unknown key 'pos_embedding\.embedding\.weight'"):
        umt5_state_dict_from_release(release, 2)
    # A block beyond num_layers is extra too.
    with pytest.raises(ValueError, match=r"unknown keys .*'blocks\.2\.attn\.q\.weight'"):
        umt5_state_dict_from_release(_release_like_state_dict(3), 2)


def test_config_from_release_names():
    xxl = {"vocab_size": 256384, "dim": 4096, "dim_attn": 4096, "dim_ffn": 10240, "num_heads": 64,
           "encoder_layers": 24, "decoder_layers": 24, "num_buckets": 32, "shared_pos": False, "dropout": 0.1}
    config = umt5_config_from_release(xxl)
    assert (config.vocab_size, config.d_model, config.d_kv, config.d_ff, config.num_heads, config.num_layers,
            config.relative_attention_num_buckets) == (256384, 4096, 64, 10240, 64, 24, 32)
    assert config.is_gated_act and config.dense_act_fn == "gelu_new"  # GELU, tanh approximation
    assert config.relative_attention_max_distance == 128 and config.layer_norm_epsilon == 1e-6
    with pytest.raises(ValueError, match="shared_pos"):
        umt5_config_from_release({**xxl, "shared_pos": True})


# (raw prompt, what the release's clean="whitespace" makes of it)
CLEANED = [
    ("  Lift   the\tred\n\ncup  ", "Lift the red cup"),
    ("it\u2019s the \u201cred\u201d cup", 'it\'s the "red" cup'),
    ("salt &amp; pepper &amp;amp; more", "salt & pepper & more"),
    ("\uff2c\uff2f\uff35\uff24\u3000noises", "LOUD noises"),
    ("a \ufb01sh and a \ufb02ower", "a fish and a flower"),
    ("a\u00a0b\u2003c\u3000d\r\ne", "a b c d e"),
    ("e\u0301t\u00e9\ufeff", "\u00e9t\u00e9"),
    ("wave\x85 then \x1b[1mbow\x1b[0m", "wave\u2026 then bow"),
    ("<b>keep &lt;tags&gt;</b>", "<b>keep <tags></b>"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "cleaned"), CLEANED)
def test_prompts_are_cleaned_as_the_release_does(raw, cleaned):
    assert clean_prompt(raw) == cleaned


def test_random_text_encoder_is_a_umt5_with_a_bias_per_layer():
    from transformers import UMT5EncoderModel

    encoder = TextEncoder.from_config(TextConfig(kind="random", dim=32, max_tokens=16))
    assert isinstance(encoder.model, UMT5EncoderModel)
    assert all(block.layer[0].SelfAttention.has_relative_attention_bias for block in encoder.model.encoder.block)
    features, real = encoder(["lift the red cup", "hi"])
    assert features.shape == (2, 16, 32)
    assert real[1].sum() == len("hi") + 1  # bytes, then </s>
    assert torch.equal(features[1, ~real[1]], torch.zeros_like(features[1, ~real[1]]))


def test_t5_kind_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="umt5"):
        TextEncoder.from_config(TextConfig(kind="t5", path="/nonexistent"))
