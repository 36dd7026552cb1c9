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


def null_text(text: torch.Tensor) -> torch.Tensor:
    """The dropped-text condition used in training dropout and in the unconditional passes: zero
    features (the model attends every position, as the release does)."""
    return torch.zeros_like(text)


@dataclass
class Conditioning:
    """What a generation is conditioned on (batch B).

    text: [B, S, Ct] (zero past each prompt's length); video_reference: [B, Cz, 1, h, w] (VAE latent of the
    reference image at video size); motion_reference: [B, Cz, 1, hm, wm] (at motion size);
    audio_windows: [B, 1+4k, window, N, D]; face_mask: [B, F, h', w'] on AIM's token grid;
    driving_motion: [B, Cz, F, hm, wm] clean motion latents for the pose-driven mode.
    """

    text: torch.Tensor
    video_reference: torch.Tensor | None = None
    motion_reference: torch.Tensor | None = None
    audio_windows: torch.Tensor | None = None
    face_mask: torch.Tensor | None = None
    driving_motion: torch.Tensor | None = None


def _guidance_batch(cond: Conditioning, with_audio: bool) -> Conditioning:
    """Stack the passes along the batch: [conditional, text dropped, text and audio dropped]
    (without audio: [conditional, text dropped]), so one forward serves all of them."""
    passes = 3 if with_audio else 2
    texts = [cond.text] + [null_text(cond.text)] * (passes - 1)
    repeat = lambda t: None if t is None else torch.cat([t] * passes)  # noqa: E731
    audio = None
    if with_audio and cond.audio_windows is not None:
        audio = torch.cat([cond.audio_windows, cond.audio_windows, torch.zeros_like(cond.audio_windows)])
    return replace(
        cond,
        text=torch.cat(texts),
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


# The release's sampler ("release" mode): its own timestep grid, two passes per step (the
# conditional, and the negative prompt with exactly-zero audio), one text scale on both streams,
# bad-CFG block skipping at high noise, Euler, the clean frames re-imposed after every step.


def release_timesteps(steps: int, shift: float, num_timesteps: int = 1000) -> torch.Tensor:
    """[steps + 1] float32: `steps` values evenly spaced from num_timesteps down to 1, each shifted
    as t' = num_timesteps * shift*s / (1 + (shift-1)*s) with s = t/num_timesteps, then 0."""
    grid = torch.linspace(num_timesteps, 1, steps, dtype=torch.float32) / num_timesteps
    shifted = shift * grid / (1 + (shift - 1) * grid) * num_timesteps
    return torch.cat([shifted, torch.zeros(1)])


@dataclass
class ReleaseConditioning:
    """What the release conditions a generation on, in its frame layout (batch B).

    text: [B, S, Ct] prompt features and negative_text: [B, S', Ct] the negative prompt's (both zero
    past their length); audio_windows: [B, 1+4k, window, N, D] or None; video_prefix: [B, Cz, 1, h, w]
    (the reference image) and video_back: [B, Cz, 1, h, w] (the object image, or a white image);
    motion_prefix: [B, Cz, 1, hm, wm] (the pose of the reference) and motion_back (the reference at
    motion size); driving_motion: [B, Cz, F, hm, wm] pose-video latents for mode "pose";
    face_mask: [B, F, h', w'] on AIM's token grid, or None (the release passes none).
    """

    text: torch.Tensor
    negative_text: torch.Tensor
    video_prefix: torch.Tensor
    video_back: torch.Tensor
    motion_prefix: torch.Tensor
    motion_back: torch.Tensor
    audio_windows: torch.Tensor | None = None
    driving_motion: torch.Tensor | None = None
    face_mask: torch.Tensor | None = None


def _clean_prefix_timesteps(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """[B, F]: `timestep` on every frame but the prefix (frame 0, clean at 0)."""
    timesteps = timestep.to(latents.dtype).expand(latents.shape[0], latents.shape[2]).clone()
    timesteps[:, 0] = 0
    return timesteps


@torch.no_grad()
def release_sample(
    model: InteractAvatar,
    cond: ReleaseConditioning,
    *,
    mode: str = "interact",
    latent_frames: int,
    steps: int = 40,
    shift: float = 5.0,
    text_scale: float = 5.0,
    skip_block: int | None = None,
    skip_above: float = 800.0,
    noise: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
    seed: int = 0,
    on_step=None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The release's generation loop. Returns (video latents [B, Cz, F, h, w], motion latents), each
    with its clean prefix as frame 0 (the back frames are not part of the result).

    skip_block: the block the unconditional pass skips while t > skip_above (the release: 11 of 30
    above 800); None: no skipping. noise: the initial (video, motion) latents; None draws them from
    a CPU generator seeded with `seed`. on_step: callable(step, video, motion) after each step.
    """
    if mode not in MODES:
        raise ValueError(f"sample: mode {mode!r}, expected one of {MODES}")
    wants_video, pose_driven = mode != "motion", mode == "pose"
    wants_motion = mode in ("interact", "motion", "pose")
    if pose_driven and cond.driving_motion is None:
        raise ValueError("sample: mode 'pose' needs cond.driving_motion")
    generator = torch.Generator().manual_seed(seed)

    def start(given: torch.Tensor | None, prefix: torch.Tensor) -> torch.Tensor:
        batch, channels, _, height, width = prefix.shape
        latents = given if given is not None else torch.randn(
            (batch, channels, latent_frames, height, width), generator=generator)
        latents = latents.to(prefix.device, prefix.dtype).clone()
        latents[:, :, :1] = prefix
        return latents

    given_video, given_motion = noise or (None, None)
    video = start(given_video, cond.video_prefix) if wants_video else None
    motion = start(given_motion, cond.motion_prefix) if wants_motion and not pose_driven else None
    length = max(cond.text.shape[1], cond.negative_text.shape[1])
    pad = lambda text: torch.nn.functional.pad(text, (0, 0, 0, length - text.shape[1]))  # noqa: E731
    texts = (pad(cond.text), pad(cond.negative_text))
    audios = (cond.audio_windows, None if cond.audio_windows is None else torch.zeros_like(cond.audio_windows))
    timesteps = release_timesteps(steps, shift)

    def stream_inputs(t: torch.Tensor, passes: int) -> tuple[Noisy | None, Noisy | None]:
        """Both streams' inputs at timestep t, repeated for `passes` passes along the batch."""
        repeat = lambda tensor: torch.cat([tensor] * passes)  # noqa: E731
        video_in = None if video is None else Noisy(
            repeat(video), repeat(cond.video_back), repeat(_clean_prefix_timesteps(video, t)))
        if pose_driven:
            driving = cond.driving_motion
            motion_in = Noisy(repeat(driving), repeat(cond.motion_back),
                              driving.new_zeros(driving.shape[0] * passes, driving.shape[2]))
        else:
            motion_in = None if motion is None else Noisy(
                repeat(motion), repeat(cond.motion_back), repeat(_clean_prefix_timesteps(motion, t)))
        return video_in, motion_in

    def passes(t: torch.Tensor, skip: int | None):
        """[(conditional video, motion), (unconditional video, motion)]: one batched forward, or two
        when the unconditional pass skips a block."""
        if skip is None:
            batch_audio = None if audios[0] is None else torch.cat(audios)
            video_in, motion_in = stream_inputs(t, 2)
            outputs = model(torch.cat(texts), video=video_in, motion=motion_in, audio_windows=batch_audio,
                            face_mask=None if cond.face_mask is None else torch.cat([cond.face_mask] * 2))
            return list(zip(*[(None, None) if out is None else out.chunk(2) for out in outputs], strict=True))
        video_in, motion_in = stream_inputs(t, 1)
        return [model(text, video=video_in, motion=motion_in, audio_windows=audio, face_mask=cond.face_mask,
                      skip_block=skip_index) for text, audio, skip_index in zip(texts, audios, (None, skip), strict=True)]

    for step in range(steps):
        t, next_t = timesteps[step : step + 1], timesteps[step + 1 : step + 2]
        skip = skip_block if skip_block is not None and t.item() > skip_above else None
        (video_c, motion_c), (video_u, motion_u) = passes(t, skip)
        dt = (t - next_t) / 1000
        if video is not None:
            video = video - (video_u + text_scale * (video_c - video_u)) * dt
            video[:, :, :1] = cond.video_prefix
        if motion is not None:
            motion = motion - (motion_u + text_scale * (motion_c - motion_u)) * dt
            motion[:, :, :1] = cond.motion_prefix
        if on_step is not None:
            on_step(step + 1, video, motion)
    return video, (cond.driving_motion if pose_driven else motion)
