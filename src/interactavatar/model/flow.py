"""Rectified flow: noising, the velocity loss, shifted timesteps, and the Euler sampler with
separate text and audio guidance that advances PIM and AIM together.

Convention: x_sigma = (1 - sigma) * x0 + sigma * noise, sigma in [0, 1], the network's timestep is
1000 * sigma, and it predicts the velocity noise - x0 (so d x / d sigma = velocity).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from interactavatar.config import MODES
from interactavatar.model import InteractAvatar, Noisy


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Spend more of the schedule at high noise: sigma' = s*sigma / (1 + (s-1)*sigma)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_training_sigmas(batch: int, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform sigmas pushed through the same shift the sampler uses: [B]."""
    return shift_sigmas(torch.rand(batch, generator=generator), shift)


@dataclass
class NoisedStream:
    noisy: Noisy
    target: torch.Tensor  # [B, Cz, F, h, w] velocity target
    loss_mask: torch.Tensor  # [B, F] 1 where the frame is denoised (clean frames carry no loss)


def add_noise(latents, reference, sigmas, noise, clean_frames: int = 0) -> NoisedStream:
    """latents: [B, Cz, F, h, w]; sigmas: [B]; noise like latents; the first `clean_frames` latent
    frames stay clean at timestep 0 (continuation, pose-driven) and are left out of the loss."""
    frames = latents.shape[2]
    is_noisy = (torch.arange(frames, device=latents.device) >= clean_frames).to(latents.dtype)
    frame_sigmas = sigmas.to(latents.dtype)[:, None] * is_noisy[None]  # [B, F]
    s = frame_sigmas[:, None, :, None, None]
    noisy_latents = (1 - s) * latents + s * noise
    return NoisedStream(
        noisy=Noisy(noisy_latents, reference, 1000 * frame_sigmas),
        target=noise - latents,
        loss_mask=is_noisy[None].expand(latents.shape[0], -1),
    )


def flow_loss(prediction: torch.Tensor, stream: NoisedStream) -> torch.Tensor:
    """Mean squared velocity error over the denoised frames: one loss for detection and generation."""
    squared = (prediction.float() - stream.target.float()).pow(2).mean(dim=(1, 3, 4))  # [B, F]
    mask = stream.loss_mask.to(squared.dtype)
    return (squared * mask).sum() / mask.sum().clamp(min=1)


def null_text(text: torch.Tensor, text_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The dropped-text condition used in training dropout and in the unconditional passes:
    zero features, all positions visible (an all-masked row would make attention undefined)."""
    return torch.zeros_like(text), torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)


@dataclass
class Conditioning:
    """What a generation is conditioned on (batch B).

    text: [B, S, Ct], text_mask: [B, S]; video_reference: [B, Cz, 1, h, w] (VAE latent of the
    reference image at video size); motion_reference: [B, Cz, 1, hm, wm] (at motion size);
    audio_windows: [B, 1+4k, window, N, D]; face_mask: [B, F, h', w'] on AIM's token grid;
    driving_motion: [B, Cz, F, hm, wm] clean motion latents for the pose-driven mode.
    """

    text: torch.Tensor
    text_mask: torch.Tensor | None = None
    video_reference: torch.Tensor | None = None
    motion_reference: torch.Tensor | None = None
    audio_windows: torch.Tensor | None = None
    face_mask: torch.Tensor | None = None
    driving_motion: torch.Tensor | None = None


def _guidance_batch(cond: Conditioning, with_audio: bool) -> Conditioning:
    """Stack the passes along the batch: [conditional, text dropped, text and audio dropped]
    (without audio: [conditional, text dropped]), so one forward serves all of them."""
    empty_text, empty_mask = null_text(cond.text, cond.text_mask)
    mask = cond.text_mask if cond.text_mask is not None else torch.ones_like(empty_mask)
    passes = 3 if with_audio else 2
    texts = [cond.text] + [empty_text] * (passes - 1)
    masks = [mask] + [empty_mask] * (passes - 1)
    repeat = lambda t: None if t is None else torch.cat([t] * passes)  # noqa: E731
    audio = None
    if with_audio and cond.audio_windows is not None:
        audio = torch.cat([cond.audio_windows, cond.audio_windows, torch.zeros_like(cond.audio_windows)])
    return replace(
        cond,
        text=torch.cat(texts),
        text_mask=torch.cat(masks),
        video_reference=repeat(cond.video_reference),
        motion_reference=repeat(cond.motion_reference),
        audio_windows=audio,
        face_mask=repeat(cond.face_mask),
        driving_motion=repeat(cond.driving_motion),
    )


def _guide(velocity: torch.Tensor, passes: int, text_scale: float, audio_scale: float) -> torch.Tensor:
    """MultiTalk's two-scale guidance: u + s_t (c - no_text) + s_a (no_text - u)."""
    if passes == 2:
        conditional, unconditional = velocity.chunk(2)
        return unconditional + text_scale * (conditional - unconditional)
    conditional, no_text, unconditional = velocity.chunk(3)
    return unconditional + text_scale * (conditional - no_text) + audio_scale * (no_text - unconditional)


def _repeat_for_passes(latents, reference, passes: int, timestep: float) -> Noisy | None:
    """The current latents once per guidance pass, every frame at `timestep`."""
    if latents is None:
        return None
    timesteps = torch.full((latents.shape[0] * passes, latents.shape[2]), timestep, device=latents.device)
    return Noisy(torch.cat([latents] * passes), reference, timesteps)


@torch.no_grad()
def sample(
    model: InteractAvatar,
    cond: Conditioning,
    *,
    mode: str = "interact",
    latent_frames: int,
    steps: int = 40,
    shift: float = 5.0,
    text_scale: float = 5.0,
    audio_scale: float = 7.5,
    seed: int = 0,
    progress=None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Euler integration of the flow ODE from noise (sigma=1) to data (sigma=0).

    mode: "interact" (text+audio+image -> video and motion), "motion" (PIM only), "audio" (AIM
    only, no interaction), "pose" (cond.driving_motion through PIM at t=0 drives AIM).
    Returns (video latents [B, Cz, F, h, w] or None, motion latents or None). Deterministic for
    a seed: the initial noise comes from a CPU generator whatever the device.
    `progress`: optional callable(step, steps) for progress displays.
    """
    if mode not in MODES:
        raise ValueError(f"sample: mode {mode!r}, expected one of {MODES}")
    wants_video, wants_motion = mode != "motion", mode in ("interact", "motion")
    with_audio = wants_video and cond.audio_windows is not None
    passes = 3 if with_audio else 2
    batched = _guidance_batch(cond, with_audio)
    generator = torch.Generator().manual_seed(seed)

    def initial_noise(reference):
        batch, channels, _, height, width = reference.shape
        shape = (batch, channels, latent_frames, height, width)
        return torch.randn(shape, generator=generator).to(reference.device, reference.dtype)

    video = initial_noise(cond.video_reference) if wants_video else None
    if mode == "pose":
        if cond.driving_motion is None:
            raise ValueError("sample: mode 'pose' needs cond.driving_motion")
        motion = cond.driving_motion
    else:
        motion = initial_noise(cond.motion_reference) if wants_motion else None
    sigmas = shift_sigmas(torch.linspace(1.0, 0.0, steps + 1), shift).tolist()

    for step in range(steps):
        sigma, next_sigma = sigmas[step], sigmas[step + 1]

        video_velocity, motion_velocity = model(
            batched.text,
            batched.text_mask,
            video=_repeat_for_passes(video, batched.video_reference, passes, 1000 * sigma),
            motion=_repeat_for_passes(motion, batched.motion_reference, passes, 0.0 if mode == "pose" else 1000 * sigma),
            audio_windows=batched.audio_windows,
            face_mask=batched.face_mask,
        )
        if video is not None:
            video = video + (next_sigma - sigma) * _guide(video_velocity, passes, text_scale, audio_scale)
        if wants_motion:
            motion = motion + (next_sigma - sigma) * _guide(motion_velocity, passes, text_scale, audio_scale)
        if progress is not None:
            progress(step + 1, steps)
    return video, (motion if wants_motion else None)
