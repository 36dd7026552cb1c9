"""Wan-style DiT building blocks shared by PIM and AIM.

Shapes: B batch, L tokens, C model dim, N heads, D head dim, F latent frames, (h, w) token grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """timesteps: [...] in [0, 1000] -> [..., dim] (cos | sin halves, as in Wan)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timesteps.device) / half)
    angles = timesteps.to(torch.float64).unsqueeze(-1) * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).float()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Head-dim channels given to (time, height, width): d - 4[d/6], 2[d/6], 2[d/6]."""
    sixth = head_dim // 6
    return head_dim - 4 * sixth, 2 * sixth, 2 * sixth


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """positions: [L, 3] (t, h, w) integer positions (t may be -1) -> angles [L, D/2].

    Computed from the positions directly (not a lookup table), so the reference frame's
    temporal index -1 rotates the other way rather than wrapping to the table's end.
    """
    angles = []
    for axis, channels in enumerate(rope_split(head_dim)):
        inv_freq = 1.0 / theta ** (torch.arange(0, channels, 2, dtype=torch.float64, device=positions.device) / channels)
        angles.append(positions[:, axis].to(torch.float64).unsqueeze(-1) * inv_freq)
    return torch.cat(angles, dim=-1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x: [B, L, N, D], angles: [L, D/2] -> x rotated pairwise (adjacent channel pairs, as Wan)."""
    rotation = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    rotated = torch.view_as_real(pairs * rotation[None, :, None, :]).flatten(-2)
    return rotated.type_as(x)


def grid_positions(frames: int, height: int, width: int, ref_frames: int, device=None) -> torch.Tensor:
    """Token positions [L, 3] for `frames` video frames followed by `ref_frames` reference frames.

    Video frame f has temporal index f; every reference frame has temporal index -1 (it sits
    "before" the clip), with the usual height/width positions.
    """
    t = torch.cat([torch.arange(frames), torch.full((ref_frames,), -1)]).to(device)
    hh, ww = torch.arange(height, device=device), torch.arange(width, device=device)
    grid = torch.stack(torch.meshgrid(t, hh, ww, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """x: [B, L, C], rope: [L, D/2] -> [B, L, C]."""
        split = lambda t: rearrange(t, "b l (n d) -> b l n d", n=self.num_heads)  # noqa: E731
        q = apply_rope(split(self.norm_q(self.q(x))), rope)
        k = apply_rope(split(self.norm_k(self.k(x))), rope)
        v = split(self.v(x))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o(rearrange(out, "b n l d -> b l (n d)"))


class CrossAttention(nn.Module):
    """Attention from tokens to a context (text, or one latent frame's audio tokens)."""

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        context_dim = context_dim or dim
        self.q, self.o = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.k, self.v = nn.Linear(context_dim, dim), nn.Linear(context_dim, dim)
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, C], context: [B, S, Cc], context_mask: [B, S] bool (True = attend) -> [B, L, C]."""
        split = lambda t: rearrange(t, "b l (n d) -> b n l d", n=self.num_heads)  # noqa: E731
        q = split(self.norm_q(self.q(x)))
        k = split(self.norm_k(self.k(context)))
        v = split(self.v(context))
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(rearrange(out, "b n l d -> b l (n d)"))


class DiTBlock(nn.Module):
    """Wan block: adaLN-modulated self-attention, ungated text cross-attention, modulated FFN.

    `extra` (AIM's audio attention) runs right after the text cross-attention.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, num_heads, eps)
        self.norm3 = nn.LayerNorm(dim, eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(dim, num_heads, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 1, 6, dim) / dim**0.5)

    def forward(self, x, time_mod, rope, context, context_mask=None, extra=None):
        """x: [B, L, C] frame-major tokens; time_mod: [B, Fr, 6, C], one modulation per frame
        (per-token timesteps are constant within a frame: the reference and clean frames sit at 0);
        rope: [L, D/2]; context: [B, S, C]; extra: callable(x) -> [B, L, C] residual, or None."""
        mod = (self.modulation + time_mod).unsqueeze(2)
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = mod.unbind(dim=3)
        x = x + per_frame(self.self_attn(per_frame(self.norm1(x), scale_a, shift_a), rope), gate_a)
        x = x + self.cross_attn(self.norm3(x), context, context_mask)
        if extra is not None:
            x = x + extra(x)
        return x + per_frame(self.ffn(per_frame(self.norm2(x), scale_f, shift_f)), gate_f)


def per_frame(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """x: [B, L, C] with L = Fr * tokens_per_frame; scale, shift: [B, Fr, 1, C].

    Returns x * (1 + scale) + shift when a shift is given (adaLN modulation), else x * scale (gate).
    Broadcasting per frame keeps modulation at [B, Fr, 6, C] instead of [B, L, 6, C].
    """
    b, length, c = x.shape
    frames = x.view(b, scale.shape[1], -1, c)
    frames = frames * scale if shift is None else frames * (1 + scale) + shift
    return frames.view(b, length, c)


class Head(nn.Module):
    """Final adaLN (shift, scale) + projection back to patch pixels of latent channels."""

    def __init__(self, dim: int, out_channels: int, patch_size: tuple[int, int, int], eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps, elementwise_affine=False)
        self.proj = nn.Linear(dim, out_channels * math.prod(patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        """x: [B, L, C], time_emb: [B, Fr, C] -> [B, L, out_channels * prod(patch)]."""
        shift, scale = (self.modulation + time_emb.unsqueeze(2)).unsqueeze(2).unbind(dim=3)
        return self.proj(per_frame(self.norm(x), scale, shift))
