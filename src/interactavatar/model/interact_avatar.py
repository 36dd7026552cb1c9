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
    """One stream's input: latents being denoised, the clean reference, per-frame timesteps.

    latents: [B, Cz, F, h, w]; reference: [B, Cz, 1, h, w]; timesteps: [B, F] in [0, 1000]
    (0 marks a clean conditioning frame, as in continuation or pose-driven generation).
    """

    latents: torch.Tensor
    reference: torch.Tensor
    timesteps: torch.Tensor


class InteractAvatar(nn.Module):
    def __init__(self, cfg: InteractAvatarConfig):
        super().__init__()
        self.cfg = cfg
        latent_channels = cfg.vae.latent_channels
        self.pim = PIM(cfg.pim, latent_channels, cfg.text.dim)
        self.aim = AIM(cfg.aim, latent_channels, cfg.text.dim, cfg.audio, cfg.vae.temporal_compression)
        self.aligner = MotionToVideoAligner(cfg.pim.dim, cfg.aim.dim, cfg.aim.num_layers, cfg.injection)
        self.set_gradient_checkpointing(cfg.gradient_checkpointing)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.pim.gradient_checkpointing = self.aim.gradient_checkpointing = enabled

    def forward(
        self,
        text: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        video: Noisy | None = None,
        motion: Noisy | None = None,
        audio_windows: torch.Tensor | None = None,
        face_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Velocities (video [B, Cz, F, H, W], motion [B, Cz, F, Hm, Wm]) for the streams given.

        text: [B, S, Ct] encoder features, text_mask: [B, S]; audio_windows: [B, 1+4k, window,
        N, D] wav2vec2 windows per video frame; face_mask: [B, F, h, w] on AIM's token grid.
        Motion only -> PIM alone; video only -> AIM alone (audio-driven, no interaction);
        both -> the dual stream, motion at t=0 being the pose-driven mode.
        """
        if video is None:
            if motion is None:
                raise ValueError("InteractAvatar.forward: give video, motion or both")
            return None, self.pim(*motion, text, text_mask)
        xv, video_inputs = self.aim.embed(*video, text, text_mask)
        audio_tokens = None if audio_windows is None else self.aim.audio_projection(audio_windows)
        if motion is not None:
            xm, motion_inputs = self.pim.embed(*motion, text, text_mask)
        for index in range(len(self.aim.blocks)):
            if motion is not None:
                before = xm
                xm = self.pim.run_block(index, xm, motion_inputs)
                injection = self.aligner(index, before, xm, motion_inputs, video_inputs)
                if injection is not None:
                    xv = xv + injection
            audio_step = self.aim.audio_step(index, audio_tokens, face_mask, video_inputs)
            xv = self.aim.run_block(index, xv, video_inputs, extra=audio_step)
        video_velocity = self.aim.unembed(xv, video_inputs)
        motion_velocity = None if motion is None else self.pim.unembed(xm, motion_inputs)
        return video_velocity, motion_velocity
