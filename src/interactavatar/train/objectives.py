"""What each stage minimises. Each objective is the module DeepSpeed wraps: it owns the trainable
network and returns {"loss": scalar, ...metrics} for a batch of cached features.

Every stage trains in the release's frame layout (the cache's, `features.FeatureCache`): latent
frame 0 of each stream is its clean prefix (timestep 0, out of the loss), and `video_back` /
`motion_back` are the clean frames appended after the frames.

Every random draw comes from the micro-batch's `StepRandomness`: per sample (timestep, noise,
condition dropout) from that sample's own generator, per step (curriculum task, pose-driven) from the
step's. So a sample is noised alike on any rank, and a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from interactavatar.data.render import PALETTE, classify_pixels
from interactavatar.model import InteractAvatar
from interactavatar.model.flow import add_noise, flow_loss, null_text, sample_training_sigmas
from interactavatar.model.vae import CausalVAE
from interactavatar.train.curriculum import Curriculum, task_latents
from interactavatar.train.sampling import StepRandomness

if TYPE_CHECKING:
    from interactavatar.model.wan_vae import WanVAE


def _sigmas(randomness: StepRandomness, shift: float, device: torch.device) -> torch.Tensor:
    return randomness.each(lambda generator: sample_training_sigmas(1, shift, generator)).to(device)


def _drop_text(batch: dict, probability: float, randomness: StepRandomness) -> torch.Tensor:
    """Replace each sample's text by the null condition with `probability` (for text guidance)."""
    text = batch["text"]
    drop = (randomness.uniform() < probability).to(text.device)
    return torch.where(drop[:, None, None], null_text(text), text)


def _drop_audio(windows: torch.Tensor, probability: float, randomness: StepRandomness) -> torch.Tensor:
    keep = (randomness.uniform() >= probability).to(windows.device, windows.dtype)
    return windows * keep.view(-1, *([1] * (windows.dim() - 1)))


def foreground_weights(pixels: torch.Tensor, weight: float, threshold: float = 0.1) -> torch.Tensor:
    """[B, 3, F, H, W] -> [B, 1, F, H, W]: 1 + weight where a pixel differs from its frame's median.

    A motion video is a few thin lines on black: under a plain L1 the cheapest reconstruction is
    black everywhere, and a small VAE sits there for thousands of steps. Weighting the pixels that
    stand out from the frame's background makes the lines worth learning first.
    """
    background = pixels.flatten(3).median(dim=-1).values[..., None, None]  # [B, 3, F, 1, 1]
    standing_out = (pixels - background).abs().amax(dim=1, keepdim=True) > threshold
    return 1 + weight * standing_out.to(pixels.dtype)


def palette_class_weights(motions: torch.Tensor, max_weight: float = 100.0) -> torch.Tensor:
    """Motion videos [N, 3, F, H, W] in [-1, 1] -> per-pixel L1 weights [N, 1, F, H, W].

    Each pixel is weighted by its palette class (black, box, each limb, joint and finger colour):
    sqrt(black's pixel count / its class's count), clipped to [1, max_weight]. Under a single
    foreground weight the box, the largest class, outweighs the whole skeleton, and a small VAE
    learns the box and draws the figure as a soft column; weighting by rarity makes each joint and
    finger worth drawing. (Demo VAE, motion only, 300 steps: PCK body 0.25 -> 0.62, PCK hands
    0.0 -> 0.43, box IoU 0.65 -> 0.58; BENCHMARKS.md.)
    """
    frames = ((motions.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    classes = np.stack([classify_pixels(frame) for frame in frames.reshape(-1, *frames.shape[2:])])
    counts = np.bincount(classes.ravel(), minlength=len(PALETTE)).astype(np.float64)
    table = np.sqrt(counts[0] / np.maximum(counts, 1.0)).clip(1.0, max_weight)
    weights = torch.from_numpy(table[classes].astype(np.float32)).reshape(*frames.shape[:4])
    return weights[:, None]


class VAEObjective(nn.Module):
    """Weighted reconstruction (L1) plus a small KL to a unit Gaussian, on videos and motion videos.
    A batch may bring its own per-pixel weights ("weights", e.g. `palette_class_weights` for motion
    videos); otherwise its foreground is weighted (`foreground_weights`)."""

    def __init__(self, vae: CausalVAE | WanVAE, kl_weight: float = 1e-6, foreground_weight: float = 20.0):
        super().__init__()
        self.vae, self.kl_weight, self.foreground_weight = vae, kl_weight, foreground_weight

    def forward(self, batch: dict, randomness: StepRandomness) -> dict:
        pixels = batch["pixels"]  # [B, 3, F, H, W] in [-1, 1]
        mean, logvar = self.vae.encode_distribution(pixels)
        latents = mean + torch.exp(0.5 * logvar) * randomness.normal_like(mean)
        reconstruction = self.vae.decode(self.vae.normalize(latents), clamp=False)
        error = (reconstruction - pixels).abs()
        weights = batch.get("weights")
        weights = foreground_weights(pixels, self.foreground_weight) if weights is None else weights
        weighted = (error * weights).mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        return {"loss": weighted + self.kl_weight * kl, "l1": error.mean().detach(), "kl": kl.detach()}


class PIMObjective(nn.Module):
    """Stage 1: PIM alone on the detection / continuation / generation curriculum (`task_latents`):
    detection denoises the reference's single motion frame, continuation keeps the first frame clean
    (the release's layout), generation denoises every frame; the back frame is `motion_back`."""

    def __init__(self, model: InteractAvatar, curriculum: Curriculum, shift: float, text_dropout: float = 0.1):
        super().__init__()
        self.pim = model.pim
        self.curriculum, self.shift, self.text_dropout = curriculum, shift, text_dropout

    def forward(self, batch: dict, randomness: StepRandomness) -> dict:
        task = self.curriculum.task(randomness.step)
        latents, clean_frames = task_latents(task, batch["motion"])
        sigmas = _sigmas(randomness, self.shift, latents.device)
        stream = add_noise(latents, batch["motion_back"], sigmas, randomness.normal_like(latents), clean_frames)
        text = _drop_text(batch, self.text_dropout, randomness)
        loss = flow_loss(self.pim(*stream.noisy, text), stream)
        return {"loss": loss, f"loss_{task}": loss.detach()}


class AudioObjective(nn.Module):
    """Stage 2: AIM with audio and text, no motion (audio first keeps lip sync, see docs/design.md, "Audio before motion")."""

    def __init__(self, model: InteractAvatar, shift: float, text_dropout: float = 0.1, audio_dropout: float = 0.1):
        super().__init__()
        # AIM alone trains; PIM and the aligner stay frozen (and unused: no motion is given).
        model.pim.requires_grad_(False)
        model.aligner.requires_grad_(False)
        self.model = model
        self.shift, self.text_dropout, self.audio_dropout = shift, text_dropout, audio_dropout

    def forward(self, batch: dict, randomness: StepRandomness) -> dict:
        video = batch["video"]
        sigmas = _sigmas(randomness, self.shift, video.device)
        # The reference image (latent frame 0) stays clean; the object image is the back frame.
        stream = add_noise(video, batch["video_back"], sigmas, randomness.normal_like(video), clean_frames=1)
        text = _drop_text(batch, self.text_dropout, randomness)
        audio = _drop_audio(batch["audio_windows"], self.audio_dropout, randomness)
        velocity, _ = self.model(text, video=stream.noisy, audio_windows=audio, face_mask=batch["face_mask"])
        loss = flow_loss(velocity, stream)
        return {"loss": loss, "video_loss": loss.detach()}


class JointObjective(nn.Module):
    """Stage 3: both streams and the aligner. Both streams share a timestep, as in sampling, and
    keep their first frame (the reference image, its pose) clean; now and then the whole motion is
    given clean (t=0) so the pose-driven mode is trained too."""

    def __init__(self, model: InteractAvatar, shift: float, text_dropout: float = 0.1, audio_dropout: float = 0.1,
                 clean_motion_probability: float = 0.1, motion_weight: float = 1.0):
        super().__init__()
        self.model = model
        self.shift, self.text_dropout, self.audio_dropout = shift, text_dropout, audio_dropout
        self.clean_motion_probability, self.motion_weight = clean_motion_probability, motion_weight

    def forward(self, batch: dict, randomness: StepRandomness) -> dict:
        video, motion = batch["video"], batch["motion"]
        sigmas = _sigmas(randomness, self.shift, video.device)
        video_stream = add_noise(video, batch["video_back"], sigmas, randomness.normal_like(video), clean_frames=1)
        pose_driven = torch.rand((), generator=randomness.step).item() < self.clean_motion_probability
        clean_frames = motion.shape[2] if pose_driven else 1
        motion_stream = add_noise(motion, batch["motion_back"], sigmas, randomness.normal_like(motion), clean_frames)
        text = _drop_text(batch, self.text_dropout, randomness)
        audio = _drop_audio(batch["audio_windows"], self.audio_dropout, randomness)
        video_velocity, motion_velocity = self.model(
            text, video=video_stream.noisy, motion=motion_stream.noisy, audio_windows=audio,
            face_mask=batch["face_mask"],
        )
        video_loss = flow_loss(video_velocity, video_stream)
        metrics = {"video_loss": video_loss.detach()}
        loss = video_loss
        if not pose_driven:
            motion_loss = flow_loss(motion_velocity, motion_stream)
            loss = loss + self.motion_weight * motion_loss
            metrics["motion_loss"] = motion_loss.detach()
        return {"loss": loss, **metrics}
