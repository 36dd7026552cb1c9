"""AIM: the video stream, a DiT with per-latent-frame audio cross-attention in every block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from interactavatar.config import AudioConfig, StreamConfig
from interactavatar.model.audio import AudioProjection
from interactavatar.model.dit import CrossAttention
from interactavatar.model.stream import DiTStream, StreamInputs


class AudioCrossAttention(nn.Module):
    """Each latent frame's tokens attend only to that frame's audio tokens; the result is scaled
    by the face mask, so speech moves the face and nothing else. Reference tokens get nothing."""

    def __init__(self, dim: int, num_heads: int, audio_dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps, elementwise_affine=True)
        self.attn = CrossAttention(dim, num_heads, context_dim=audio_dim, eps=eps)

    def forward(self, x, audio_tokens, face_mask, inputs: StreamInputs) -> torch.Tensor:
        """x: [B, L, C]; audio_tokens: [B, F, T, Da]; face_mask: [B, F, h, w] or None -> [B, L, C]."""
        frames, per_frame = inputs.frames, inputs.tokens_per_frame
        video = rearrange(x[:, : frames * per_frame], "b (f n) c -> (b f) n c", f=frames)
        out = rearrange(self.attn(self.norm(video), audio_tokens.flatten(0, 1)), "(b f) n c -> b f n c", f=frames)
        if face_mask is not None:
            out = out * face_mask.flatten(2)[..., None].to(out.dtype)
        return F.pad(out.flatten(1, 2), (0, 0, 0, inputs.ref_frames * per_frame))


class AIM(DiTStream):
    def __init__(self, cfg: StreamConfig, latent_channels: int, text_dim: int, audio: AudioConfig,
                 temporal_compression: int):
        super().__init__(cfg, latent_channels, text_dim)
        self.audio_projection = AudioProjection(audio, temporal_compression)
        self.audio_blocks = nn.ModuleList(
            AudioCrossAttention(cfg.dim, cfg.num_heads, audio.feature_dim, cfg.eps) for _ in range(cfg.num_layers)
        )

    def audio_step(self, index: int, audio_tokens, face_mask, inputs: StreamInputs):
        """The callable that block `index` runs after its text attention, or None without audio."""
        if audio_tokens is None:
            return None
        block = self.audio_blocks[index]
        return lambda x: block(x, audio_tokens, face_mask, inputs)
