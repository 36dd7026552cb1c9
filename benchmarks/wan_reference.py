"""diffusers' WanTransformer3DModel built at one of our stream configurations, with our weights.

Loading our weights into it (the mapping below) proves the two networks compute the same function,
so the benchmark compares implementations, not architectures.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel

from interactavatar.config import StreamConfig
from interactavatar.model.stream import DiTStream

# Our parameter name prefix -> diffusers' (block-level names are mapped per block below).
_TOP = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.proj": "proj_out",
}
_BLOCK = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",  # the affine LayerNorm before the text cross-attention
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}


def build_wan(cfg: StreamConfig, latent_channels: int, text_dim: int) -> WanTransformer3DModel:
    """A diffusers Wan DiT with exactly our stream's hyper-parameters."""
    return WanTransformer3DModel(
        patch_size=cfg.patch_size,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=latent_channels,
        out_channels=latent_channels,
        text_dim=text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=cfg.eps,
    )


def to_wan_state_dict(stream: DiTStream) -> dict[str, torch.Tensor]:
    """Our stream's state dict renamed (and modulation tables reshaped) for WanTransformer3DModel."""
    out = {}
    for name, tensor in stream.state_dict().items():
        prefix, _, leaf = name.rpartition(".")
        if name == "head.modulation":
            out["scale_shift_table"] = tensor.reshape(1, 2, -1)
        elif name.startswith("blocks."):
            _, index, rest = name.split(".", 2)
            if rest == "modulation":
                out[f"blocks.{index}.scale_shift_table"] = tensor.reshape(1, 6, -1)
            else:
                inner, _, leaf = rest.rpartition(".")
                out[f"blocks.{index}.{_BLOCK[inner]}.{leaf}"] = tensor
        else:
            out[f"{_TOP[prefix]}.{leaf}"] = tensor
    return out
