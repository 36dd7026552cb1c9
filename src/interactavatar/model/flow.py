"""Rectified flow: noising, the velocity loss, shifted timesteps, and the Euler sampler that advances
PIM and AIM together in the release's frame layout, with the release's two-pass guidance or our
three-pass one (separate text and audio scales).

Convention: x_sigma = (1 - sigma) * x0 + sigma * noise, sigma in [0, 1], the network's timestep is
1000 * sigma, and it predicts the velocity noise - x0 (so d x / d sigma = velocity).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def add_noise(latents, back, sigmas, noise, clean_frames: int = 0) -> NoisedStream:
    """latents: [B, Cz, F, h, w]; sigmas: [B]; noise like latents; the first `clean_frames` latent
    frames stay clean at timestep 0 (continuation, pose-driven) and are left out of the loss."""
    frames = latents.shape[2]
    is_noisy = (torch.arange(frames, device=latents.device) >= clean_frames).to(latents.dtype)
    frame_sigmas = sigmas.to(latents.dtype)[:, None] * is_noisy[None]  # [B, F]
    s = frame_sigmas[:, None, :, None, None]
    noisy_latents = (1 - s) * latents + s * noise
    return NoisedStream(
        noisy=Noisy(noisy_latents, back, 1000 * frame_sigmas),
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


GUIDANCES = ("release", "three-pass")


def release_timesteps(steps: int, shift: float, num_timesteps: int = 1000) -> torch.Tensor:
    """[steps + 1] float32, the release's grid: `steps` values evenly spaced from num_timesteps
    down to 1, each shifted as t' = num_timesteps * shift*s / (1 + (shift-1)*s) with
    s = t/num_timesteps, then 0."""
    grid = torch.linspace(num_timesteps, 1, steps, dtype=torch.float32) / num_timesteps
    shifted = shift * grid / (1 + (shift - 1) * grid) * num_timesteps
    return torch.cat([shifted, torch.zeros(1)])


@dataclass
class Conditioning:
    """What a generation is conditioned on, in the release's frame layout (batch B).

    text: [B, S, Ct] prompt features and negative_text: [B, S', Ct] the unconditional text (the
    negative prompt's features, or zeros), both zero past their length; audio_windows:
    [B, 1+4k, window, N, D] or None; video_prefix: [B, Cz, 1, h, w] (the reference image) and
    video_back: [B, Cz, 1, h, w] (the object image, or a white image); motion_prefix:
    [B, Cz, 1, hm, wm] (the pose of the reference; None: the motion is generated whole, as in
    detection) and motion_back (the reference at motion size); driving_motion: [B, Cz, F, hm, wm]
    pose-video latents for mode "pose"; face_mask: [B, F, h', w'] on AIM's token grid, or None.
    """

    text: torch.Tensor
    negative_text: torch.Tensor
    video_prefix: torch.Tensor | None
    video_back: torch.Tensor | None
    motion_prefix: torch.Tensor | None
    motion_back: torch.Tensor | None
    audio_windows: torch.Tensor | None = None
    driving_motion: torch.Tensor | None = None
    face_mask: torch.Tensor | None = None


def _frame_timesteps(latents: torch.Tensor, timestep: torch.Tensor, prefix: bool) -> torch.Tensor:
    """[B, F]: `timestep` on every frame, 0 on the clean prefix (frame 0) when there is one."""
    timesteps = timestep.to(latents.dtype).expand(latents.shape[0], latents.shape[2]).clone()
    if prefix:
        timesteps[:, 0] = 0
    return timesteps


def _pad_to(text: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(text, (0, 0, 0, length - text.shape[1]))


@torch.no_grad()
def sample(
    model: InteractAvatar,
    cond: Conditioning,
    *,
    mode: str = "interact",
    latent_frames: int,
    steps: int = 40,
    shift: float = 5.0,
    guidance: str = "release",
    text_scale: float = 5.0,
    audio_scale: float = 7.5,
    skip_block: int | None = None,
    skip_above: float = 800.0,
    noise: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
    seed: int = 0,
    on_step=None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Euler integration of the flow ODE over the release's timestep grid, the clean prefix and back
    frames re-imposed after every step. Returns (video latents [B, Cz, F, h, w], motion latents),
    each with its prefix as frame 0 (the back frames are not part of the result).

    mode: "interact" (text + audio + image -> video and motion), "motion" (PIM only), "audio" (AIM
    only, no interaction), "pose" (cond.driving_motion through PIM at t=0 drives AIM).
    guidance: "release", two passes per step, the conditional and the unconditional (negative text,
    exactly-zero audio) combined as u + text_scale (c - u) on both streams, the unconditional pass
    skipping `skip_block` while t > skip_above (bad-CFG); "three-pass", the conditional, the
    unconditional text with the audio, and the unconditional text without audio, combined as
    u + text_scale (c - no_text) + audio_scale (no_text - u). The passes of a step run as one
    batched forward where they can.
    noise: the initial (video, motion) latents; None draws them from a CPU generator seeded with
    `seed`, whatever the device. on_step: callable(step, steps, video, motion) after each step.
    """
    if mode not in MODES:
        raise ValueError(f"sample: mode {mode!r}, expected one of {MODES}")
    if guidance not in GUIDANCES:
        raise ValueError(f"sample: guidance {guidance!r}, expected one of {GUIDANCES}")
    wants_video, pose_driven = mode not in ("motion",), mode == "pose"
    wants_motion = mode in ("interact", "motion", "pose")
    if pose_driven and cond.driving_motion is None:
        raise ValueError("sample: mode 'pose' needs cond.driving_motion")
    generator = torch.Generator().manual_seed(seed)

    def start(given: torch.Tensor | None, prefix: torch.Tensor | None, back: torch.Tensor) -> torch.Tensor:
        batch, channels, _, height, width = back.shape
        latents = given if given is not None else torch.randn(
            (batch, channels, latent_frames, height, width), generator=generator)
        latents = latents.to(back.device, back.dtype).clone()
        if prefix is not None:
            latents[:, :, :1] = prefix
        return latents

    given_video, given_motion = noise or (None, None)
    video = start(given_video, cond.video_prefix, cond.video_back) if wants_video else None
    motion = start(given_motion, cond.motion_prefix, cond.motion_back) if wants_motion and not pose_driven else None
    length = max(cond.text.shape[1], cond.negative_text.shape[1])
    text, negative = _pad_to(cond.text, length), _pad_to(cond.negative_text, length)
    audio = None if not wants_video else cond.audio_windows
    silence = None if audio is None else torch.zeros_like(audio)
    # (text, audio, skips at high noise) of each pass, in the order the guidance formula reads them
    passes = [(text, audio, False), (negative, silence, True)] if guidance == "release" else \
        [(text, audio, False), (negative, audio, False), (negative, silence, False)]
    timesteps = release_timesteps(steps, shift)

    def inputs(t: torch.Tensor, count: int) -> tuple[Noisy | None, Noisy | None]:
        """Both streams at timestep t, repeated for `count` passes along the batch."""
        repeat = lambda tensor: torch.cat([tensor] * count)  # noqa: E731
        video_in = None if video is None else Noisy(
            repeat(video), repeat(cond.video_back), repeat(_frame_timesteps(video, t, cond.video_prefix is not None)))
        if pose_driven:
            driving = cond.driving_motion
            motion_in = Noisy(repeat(driving), repeat(cond.motion_back),
                              driving.new_zeros(driving.shape[0] * count, driving.shape[2]))
        else:
            motion_in = None if motion is None else Noisy(
                repeat(motion), repeat(cond.motion_back),
                repeat(_frame_timesteps(motion, t, cond.motion_prefix is not None)))
        return video_in, motion_in

    def run(t: torch.Tensor, selected: list, skip: int | None) -> list:
        """(video, motion) velocities of the `selected` passes, batched into one forward."""
        video_in, motion_in = inputs(t, len(selected))
        audios = [pass_audio for _, pass_audio, _ in selected]
        outputs = model(torch.cat([pass_text for pass_text, _, _ in selected]), video=video_in, motion=motion_in,
                        audio_windows=None if audios[0] is None else torch.cat(audios),
                        face_mask=None if cond.face_mask is None else torch.cat([cond.face_mask] * len(selected)),
                        skip_block=skip)
        return list(zip(*[[None] * len(selected) if out is None else out.chunk(len(selected)) for out in outputs],
                        strict=True))

    def guide(velocities: list) -> torch.Tensor | None:
        if velocities[0] is None:
            return None
        if guidance == "release":
            conditional, unconditional = velocities
            return unconditional + text_scale * (conditional - unconditional)
        conditional, no_text, unconditional = velocities
        return unconditional + text_scale * (conditional - no_text) + audio_scale * (no_text - unconditional)

    for step in range(steps):
        t, next_t = timesteps[step : step + 1], timesteps[step + 1 : step + 2]
        skip = skip_block if skip_block is not None and t.item() > skip_above else None
        if skip is None:
            velocities = run(t, passes, None)
        else:  # a skipping pass cannot share a forward with one that does not skip
            velocities = run(t, [p for p in passes if not p[2]], None) + run(t, [p for p in passes if p[2]], skip)
        video_velocity, motion_velocity = (guide(list(stream)) for stream in zip(*velocities, strict=True))
        dt = (t - next_t) / 1000
        if video is not None:
            video = video - video_velocity * dt
            if cond.video_prefix is not None:
                video[:, :, :1] = cond.video_prefix
        if motion is not None:
            motion = motion - motion_velocity * dt
            if cond.motion_prefix is not None:
                motion[:, :, :1] = cond.motion_prefix
        if on_step is not None:
            on_step(step + 1, steps, video, motion)
    return video, (cond.driving_motion if pose_driven else motion)
