"""One DiT stream over VAE latents: patchify, embed time and text, run blocks, unpatchify.

PIM and AIM are both `DiTStream`s (AIM adds audio attention). The stream exposes its pieces
(`embed`, `blocks`, `unembed`) so that InteractAvatar can interleave the two stacks block by block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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

    time_emb: torch.Tensor  # [B, Fr, C], Fr = frames + reference frames
    time_mod: torch.Tensor  # [B, Fr, 6, C]
    rope: torch.Tensor  # [L, D/2] angles
    rotation: torch.Tensor  # [L, D/2] complex: the angles as unit rotations, shared by every block
    context: torch.Tensor  # [B, S, C] embedded text
    context_mask: torch.Tensor | None  # [B, S] bool
    frames: int  # F, latent frames being denoised (the reference frames follow them)
    ref_frames: int
    grid: tuple[int, int]  # (h, w) token grid of one frame

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]


class DiTStream(nn.Module):
    def __init__(self, cfg: StreamConfig, latent_channels: int, text_dim: int):
        super().__init__()
        self.cfg = cfg
        self.latent_channels = latent_channels
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

    def embed(self, latents, ref_latents, frame_timesteps, text, text_mask=None):
        """Tokens for the noisy frames followed by the clean reference frame(s).

        latents: [B, Cz, F, H, W]; ref_latents: [B, Cz, R, H, W]; frame_timesteps: [B, F] in
        [0, 1000] (a clean conditioning frame passes 0); text: [B, S, Ct]; text_mask: [B, S].
        Returns tokens [B, (F+R)*h*w, C] and the StreamInputs for the blocks and head.
        """
        frames, ref_frames = latents.shape[2], ref_latents.shape[2]
        x = self.patch_embedding(torch.cat([latents, ref_latents], dim=2))
        h, w = x.shape[-2:]
        x = rearrange(x, "b c f h w -> b (f h w) c")
        ref_timesteps = frame_timesteps.new_zeros(frame_timesteps.shape[0], ref_frames)
        timesteps = torch.cat([frame_timesteps, ref_timesteps], dim=1)
        time_emb = self.time_embedding(sinusoidal_embedding(timesteps, self.cfg.freq_dim).to(x.dtype))
        time_mod = rearrange(self.time_projection(time_emb), "b f (six c) -> b f six c", six=6)
        angles = rope_angles(grid_positions(frames, h, w, ref_frames, device=x.device), self.cfg.head_dim)
        inputs = StreamInputs(
            time_emb=time_emb,
            time_mod=time_mod,
            rope=angles,
            rotation=rope_rotation(angles),
            context=self.text_embedding(text),
            context_mask=text_mask,
            frames=frames,
            ref_frames=ref_frames,
            grid=(h, w),
        )
        return x, inputs

    def run_block(self, index: int, x: torch.Tensor, inputs: StreamInputs, extra=None) -> torch.Tensor:
        block = self.blocks[index]
        args = (x, inputs.time_mod, inputs.rotation, inputs.context, inputs.context_mask, extra)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def unembed(self, x: torch.Tensor, inputs: StreamInputs) -> torch.Tensor:
        """Tokens [B, L, C] -> velocity [B, Cz, F, H, W] of the noisy frames (reference dropped)."""
        out = self.head(x, inputs.time_emb)[:, : inputs.frames * inputs.tokens_per_frame]
        pt, ph, pw = self.cfg.patch_size
        h, w = inputs.grid
        return rearrange(
            out, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)",
            f=inputs.frames, h=h, w=w, pt=pt, ph=ph, pw=pw,
        )

    def forward(self, latents, ref_latents, frame_timesteps, text, text_mask=None) -> torch.Tensor:
        """A stream on its own (PIM for motion only). Shapes as in `embed`; returns [B, Cz, F, H, W]."""
        x, inputs = self.embed(latents, ref_latents, frame_timesteps, text, text_mask)
        for index in range(len(self.blocks)):
            x = self.run_block(index, x, inputs)
        return self.unembed(x, inputs)
