"""InteractAvatar: PIM and AIM denoised together, PIM's structure fed block by block into AIM."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from interactavatar.config import InteractAvatarConfig
from interactavatar.model.aim import AIM
from interactavatar.model.aligner import MotionToVideoAligner
from interactavatar.model.pim import PIM


class Noisy(NamedTuple):
    """One stream's input, in the release's frame layout.

    latents: [B, Cz, F, h, w], the clean prefix frame(s) first; back: [B, Cz, R, h, w], the clean
    back-appended frame(s) (temporal RoPE -1); timesteps: [B, F] in [0, 1000], 0 on every clean
    frame (the prefix, continuation and pose-driven frames).
    """

    latents: torch.Tensor
    back: torch.Tensor
    timesteps: torch.Tensor


class InteractAvatar(nn.Module):
    def __init__(self, cfg: InteractAvatarConfig):
        super().__init__()
        self.cfg = cfg
        latent_channels, text_len = cfg.vae.latent_channels, cfg.text.max_tokens
        self.pim = PIM(cfg.pim, latent_channels, cfg.text.dim, text_len)
        self.aim = AIM(cfg.aim, latent_channels, cfg.text.dim, text_len, cfg.audio, cfg.vae.temporal_compression)
        self.aligner = MotionToVideoAligner(cfg.pim.dim, cfg.aim.dim, cfg.aim.num_layers, cfg.injection)
        self.set_gradient_checkpointing(cfg.gradient_checkpointing)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.pim.gradient_checkpointing = self.aim.gradient_checkpointing = enabled

    def forward(
        self,
        text: torch.Tensor,
        video: Noisy | None = None,
        motion: Noisy | None = None,
        audio_windows: torch.Tensor | None = None,
        face_mask: torch.Tensor | None = None,
        skip_block: int | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Velocities (video [B, Cz, F, H, W], motion [B, Cz, F, Hm, Wm]) for the streams given.

        text: [B, S, Ct] encoder features, zero past each prompt's length (zero-padded to text_len
        and attended with no mask); audio_windows: [B, 1+4k, window, N, D] wav2vec2 windows per
        video frame; face_mask: [B, F, h, w] on AIM's token grid. skip_block: a block index that
        both streams skip, injection included (the release's bad-CFG unconditional pass).
        Motion only -> PIM alone; video only -> AIM alone (audio-driven, no interaction);
        both -> the dual stream, motion at t=0 being the pose-driven mode.
        """
        if video is None:
            if motion is None:
                raise ValueError("InteractAvatar.forward: give video, motion or both")
            return None, self.pim(*motion, text)
        xv, video_inputs = self.aim.embed(*video, text)
        audio_tokens = None if audio_windows is None else self.aim.audio_projection(audio_windows)
        if motion is not None:
            xm, motion_inputs = self.pim.embed(*motion, text)
            previous = None
        for index in range(len(self.aim.blocks)):
            if index == skip_block:
                continue
            if motion is not None:
                # The release feeds AIM detached motion states: the aligner does not train PIM.
                state = xm.detach()
                injection = self.aligner(index, state, previous, motion_inputs, video_inputs)
                previous = state
                if injection is not None:
                    xv = xv + injection
            audio_step = self.aim.audio_step(index, audio_tokens, face_mask, video_inputs)
            xv = self.aim.run_block(index, xv, video_inputs, extra=audio_step)
            if motion is not None:
                xm = self.pim.run_block(index, xm, motion_inputs)
        video_velocity = self.aim.unembed(xv, video_inputs)
        motion_velocity = None if motion is None else self.pim.unembed(xm, motion_inputs)
        return video_velocity, motion_velocity
