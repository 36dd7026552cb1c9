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


def rope_rotation(angles: torch.Tensor) -> torch.Tensor:
    """angles: [L, D/2] -> unit complex rotations [L, D/2], computed once per forward and shared
    by every block (building them in each attention call cost more than applying them)."""
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """x: [B, L, ..., D], rotation: complex, broadcastable to x's pairs [B, L, ..., D/2] -> x rotated
    pairwise (adjacent channel pairs, as Wan). One complex multiply is one kernel each way; the
    real-arithmetic form (diffusers') needs six."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


def grid_positions(frames: int, height: int, width: int, back_frames: int, device=None) -> torch.Tensor:
    """Token positions [L, 3] for `frames` frames followed by `back_frames` back-appended frames.

    Frame f has temporal index f; every back-appended frame has temporal index -1 (it sits
    "before" the clip, as the release places it), with the usual height/width positions.
    """
    t = torch.cat([torch.arange(frames), torch.full((back_frames,), -1)]).to(device)
    hh, ww = torch.arange(height, device=device), torch.arange(width, device=device)
    grid = torch.stack(torch.meshgrid(t, hh, ww, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


class SelfAttention(nn.Module):
    """Parameters are kept as separate q/k/v Linears (Wan's and the checkpoints' names), but run
    as one fused projection, one q|k RMS norm and one q|k rotation: a third of the kernel launches,
    which is what costs at the CPU sizes (the matmul FLOPs are the same)."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
        """x: [B, L, C], rotation: [L, D/2] complex -> [B, L, C]."""
        qk, v = fused_linear(x, (self.q, self.k, self.v)).unflatten(-1, (3, -1)).split([2, 1], dim=2)
        qk = qk_rms_norm(qk, self.norm_q, self.norm_k)
        q, k = apply_rope(qk.unflatten(-1, (self.num_heads, -1)), rotation[:, None, None]).unbind(2)
        v = v.squeeze(2).unflatten(-1, (self.num_heads, -1))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o(out.transpose(1, 2).flatten(2))


def fused_linear(x: torch.Tensor, layers: tuple[nn.Module, ...]) -> torch.Tensor:
    """x [..., C] through several projections, their outputs concatenated [..., sum of outputs]:
    one matmul of the stacked weights when every layer is a plain Linear. A layer wrapped by an
    adapter (PEFT's LoRA layer, model/lora.py) runs its own forward instead, so that its low-rank
    term applies: reading its `.weight` would silently skip the adapter."""
    if all(isinstance(layer, nn.Linear) for layer in layers):
        return F.linear(x, torch.cat([layer.weight for layer in layers]), torch.cat([layer.bias for layer in layers]))
    return torch.cat([layer(x) for layer in layers], dim=-1)


def qk_rms_norm(qk: torch.Tensor, norm_q: RMSNorm, norm_k: RMSNorm) -> torch.Tensor:
    """qk: [..., 2, C] (q then k) -> both RMS-normalised across heads with their own weights."""
    weight = torch.stack([norm_q.weight, norm_k.weight]).float()
    return (F.rms_norm(qk.float(), (qk.shape[-1],), eps=norm_q.eps) * weight).type_as(qk)


class CrossAttention(nn.Module):
    """Attention from tokens to the text context, every context position attended (no mask: the
    release zero-pads the features to `text_len` and lets the zeros take part)."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: [B, L, C], context: [B, S, C] -> [B, L, C]."""
        split = lambda t: rearrange(t, "b l (n d) -> b n l d", n=self.num_heads)  # noqa: E731
        q = split(self.norm_q(self.q(x)))
        # k and v in one projection of the context, as in SelfAttention
        k, v = fused_linear(context, (self.k, self.v)).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(q, split(self.norm_k(k)), split(v))
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
        self.cross_attn = CrossAttention(dim, num_heads, eps)
        self.norm2 = nn.LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 1, 6, dim) / dim**0.5)

    def forward(self, x, time_mod, rotation, context, extra=None):
        """x: [B, L, C] frame-major tokens; time_mod: [B, Fr, 6, C], one modulation per frame
        (per-token timesteps are constant within a frame: the prefix and back frames sit at 0);
        rotation: [L, D/2] complex RoPE; context: [B, S, C]; extra: callable(x) -> [B, L, C]
        residual, or None."""
        mod = (self.modulation + time_mod).unsqueeze(2)
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = mod.unbind(dim=3)
        x = gated_add(x, self.self_attn(modulate(self.norm1(x), shift_a, scale_a), rotation), gate_a)
        x = x + self.cross_attn(self.norm3(x), context)
        if extra is not None:
            x = x + extra(x)
        return gated_add(x, self.ffn(modulate(self.norm2(x), shift_f, scale_f)), gate_f)


# Modulation broadcasts per frame ([B, Fr, 1, C] against the frame view [B, Fr, L/Fr, C]) rather than
# per token, and each is one addcmul kernel instead of two or three elementwise ones.
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x [B, L, C] with L = Fr * tokens_per_frame; shift, scale [B, Fr, 1, C] -> x * (1 + scale) + shift."""
    frames = x.view(x.shape[0], scale.shape[1], -1, x.shape[-1])
    return torch.addcmul(shift, frames, 1 + scale).view(x.shape)


def gated_add(x: torch.Tensor, residual: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """x + residual * gate; x, residual [B, L, C], gate [B, Fr, 1, C]."""
    frames = x.view(x.shape[0], gate.shape[1], -1, x.shape[-1])
    return torch.addcmul(frames, residual.view(frames.shape), gate).view(x.shape)


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
        return self.proj(modulate(self.norm(x), shift, scale))
