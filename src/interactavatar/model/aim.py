"""AIM: the video stream, a DiT with per-latent-frame audio cross-attention in every block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from interactavatar.config import AudioConfig, StreamConfig
from interactavatar.model.audio import AudioProjection
from interactavatar.model.stream import DiTStream, StreamInputs


class AudioCrossAttention(nn.Module):
    """Each latent frame's tokens attend only to that frame's audio tokens, as the release computes
    it: a LayerNorm, then plain multi-head attention (no q/k normalisation; k and v from one fused
    projection, k rows first), scaled by the face mask when one is given.

    It runs on every frame: the back-appended frames get all-zero audio tokens, so they receive a
    constant (the projection biases), exactly as in the release.
    """

    def __init__(self, dim: int, num_heads: int, audio_dim: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim, eps, elementwise_affine=True)
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(audio_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, audio_tokens, face_mask, inputs: StreamInputs) -> torch.Tensor:
        """x: [B, L, C]; audio_tokens: [B, F, T, Da] for the F frames; face_mask: [B, F, h, w] or
        None -> [B, L, C]."""
        all_frames = inputs.frames + inputs.back_frames
        tokens = F.pad(audio_tokens, (0, 0, 0, 0, 0, inputs.back_frames))  # zero tokens for the back frames
        q = rearrange(self.q_linear(self.norm(x)), "b (f n) (h d) -> (b f) h n d", f=all_frames, h=self.num_heads)
        k, v = rearrange(self.kv_linear(tokens), "b f t (two h d) -> two (b f) h t d", two=2, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(rearrange(out, "(b f) h n d -> b (f n) (h d)", f=all_frames))
        if face_mask is None:
            return out
        # The back frames are not the clip's frames: they take the first frame's (the reference's) face.
        mask = torch.cat([face_mask, face_mask[:, :1].expand(-1, inputs.back_frames, -1, -1)], dim=1)
        return out * mask.flatten(1)[..., None].to(out.dtype)


class AIM(DiTStream):
    def __init__(self, cfg: StreamConfig, latent_channels: int, text_dim: int, text_len: int, audio: AudioConfig,
                 temporal_compression: int):
        super().__init__(cfg, latent_channels, text_dim, text_len)
        self.audio_projection = AudioProjection(audio, temporal_compression)
        self.audio_blocks = nn.ModuleList(
            AudioCrossAttention(cfg.dim, cfg.num_heads, audio.token_dim, cfg.eps) for _ in range(cfg.num_layers)
        )

    def audio_step(self, index: int, audio_tokens, face_mask, inputs: StreamInputs):
        """The callable that block `index` runs after its text attention, or None without audio."""
        if audio_tokens is None:
            return None
        block = self.audio_blocks[index]
        return lambda x: block(x, audio_tokens, face_mask, inputs)
