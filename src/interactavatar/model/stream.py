"""One DiT stream over VAE latents: patchify, embed time and text, run blocks, unpatchify.

PIM and AIM are both `DiTStream`s (AIM adds audio attention). The stream exposes its pieces
(`embed`, `blocks`, `unembed`) so that InteractAvatar can interleave the two stacks block by block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from interactavatar.config import StreamConfig
from interactavatar.model.dit import (
    DiTBlock,
    Head,
    grid_positions,
    rope_angles,
    rope_rotation,
    sinusoidal_embedding,
)


@dataclass
class StreamInputs:
    """Everything a stream's blocks need besides the tokens, computed once per forward."""

    time_emb: torch.Tensor  # [B, Fr, C], Fr = frames + back frames
    time_mod: torch.Tensor  # [B, Fr, 6, C]
    rope: torch.Tensor  # [L, D/2] angles
    rotation: torch.Tensor  # [L, D/2] complex: the angles as unit rotations, shared by every block
    context: torch.Tensor  # [B, text_len, C] embedded text
    frames: int  # F, latent frames (the clean prefix and the noisy frames; the back frames follow)
    back_frames: int
    grid: tuple[int, int]  # (h, w) token grid of one frame

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]


class DiTStream(nn.Module):
    def __init__(self, cfg: StreamConfig, latent_channels: int, text_dim: int, text_len: int):
        super().__init__()
        self.cfg = cfg
        self.latent_channels = latent_channels
        self.text_len = text_len
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(latent_channels, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(
            DiTBlock(dim, cfg.num_heads, cfg.ffn_dim, cfg.eps) for _ in range(cfg.num_layers)
        )
        self.head = Head(dim, latent_channels, cfg.patch_size, cfg.eps)
        self.gradient_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        """Wan's initialisation: xavier everywhere, small normal embeddings, a zero output head."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for module in (*self.text_embedding, *self.time_embedding):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(self.head.proj.weight)

    def embed(self, latents, back_latents, frame_timesteps, text):
        """Tokens for the frames followed by the clean back-appended frame(s), as the release lays
        them out: [clean prefix at t=0, noisy frames, back frames at t=0 with temporal RoPE -1].

        latents: [B, Cz, F, H, W]; back_latents: [B, Cz, R, H, W]; frame_timesteps: [B, F] in
        [0, 1000] (a clean conditioning frame such as the prefix passes 0); text: [B, S, Ct]
        features, zero past each prompt's length, S <= text_len (zero-padded here).
        Returns tokens [B, (F+R)*h*w, C] and the StreamInputs for the blocks and head.
        """
        frames, back_frames = latents.shape[2], back_latents.shape[2]
        if text.shape[1] > self.text_len:
            raise ValueError(f"text: {text.shape[1]} feature rows, more than text_len={self.text_len}")
        x = self.patch_embedding(torch.cat([latents, back_latents], dim=2))
        h, w = x.shape[-2:]
        x = rearrange(x, "b c f h w -> b (f h w) c")
        back_timesteps = frame_timesteps.new_zeros(frame_timesteps.shape[0], back_frames)
        timesteps = torch.cat([frame_timesteps, back_timesteps], dim=1)
        time_emb = self.time_embedding(sinusoidal_embedding(timesteps, self.cfg.freq_dim).to(x.dtype))
        time_mod = rearrange(self.time_projection(time_emb), "b f (six c) -> b f six c", six=6)
        angles = rope_angles(grid_positions(frames, h, w, back_frames, device=x.device), self.cfg.head_dim)
        inputs = StreamInputs(
            time_emb=time_emb,
            time_mod=time_mod,
            rope=angles,
            rotation=rope_rotation(angles),
            context=self.text_embedding(F.pad(text, (0, 0, 0, self.text_len - text.shape[1]))),
            frames=frames,
            back_frames=back_frames,
            grid=(h, w),
        )
        return x, inputs

    def run_block(self, index: int, x: torch.Tensor, inputs: StreamInputs, extra=None) -> torch.Tensor:
        block = self.blocks[index]
        args = (x, inputs.time_mod, inputs.rotation, inputs.context, extra)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def unembed(self, x: torch.Tensor, inputs: StreamInputs) -> torch.Tensor:
        """Tokens [B, L, C] -> velocity [B, Cz, F, H, W] of the frames (back frames dropped)."""
        out = self.head(x, inputs.time_emb)[:, : inputs.frames * inputs.tokens_per_frame]
        pt, ph, pw = self.cfg.patch_size
        h, w = inputs.grid
        return rearrange(
            out, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)",
            f=inputs.frames, h=h, w=w, pt=pt, ph=ph, pw=pw,
        )

    def forward(self, latents, back_latents, frame_timesteps, text) -> torch.Tensor:
        """A stream on its own (PIM for motion only). Shapes as in `embed`; returns [B, Cz, F, H, W]."""
        x, inputs = self.embed(latents, back_latents, frame_timesteps, text)
        for index in range(len(self.blocks)):
            x = self.run_block(index, x, inputs)
        return self.unembed(x, inputs)
