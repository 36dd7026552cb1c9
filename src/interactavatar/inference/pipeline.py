"""Generation in the manner of a diffusers pipeline: load a model directory once, then call it
with a reference image, a sentence and speech to get the video (and the motion that drove it)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from interactavatar.io.media import cover_transform, encode_video, fit_on_white, resize_and_crop, write_video
from interactavatar.model.audio import fit_to_frames, frame_count, window_features
from interactavatar.model.bundle import ModelBundle, load_bundle
from interactavatar.model.flow import Conditioning, null_text, sample


@dataclass
class GenerationResult:
    video: np.ndarray | None  # [T, H, W, 3] uint8
    motion: np.ndarray | None  # [T, Hm, Wm, 3] uint8
    audio: np.ndarray  # [S] float32 at `sample_rate`, cut to the frames
    fps: int
    sample_rate: int
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, video_path: str | Path, motion_path: str | Path | None = None) -> None:
        """The video with the speech muxed in; the motion video (silent) when a path is given."""
        if self.video is not None:
            write_video(video_path, self.video, self.fps, self.audio, self.sample_rate)
        if motion_path is not None and self.motion is not None:
            write_video(motion_path, self.motion, self.fps)

    def to_mp4_bytes(self, with_motion: bool = True) -> tuple[bytes | None, bytes | None]:
        """(video, motion) as `save` would write them, encoded in memory: the video with the speech
        muxed in; the motion (silent) only when `with_motion`. None for what the mode made none of."""
        video = None if self.video is None else encode_video(self.video, self.fps, self.audio, self.sample_rate)
        motion = None if not with_motion or self.motion is None else encode_video(self.motion, self.fps)
        return video, motion


def to_pixels(frames: np.ndarray, device) -> torch.Tensor:
    """[T, H, W, 3] uint8 -> [1, 3, T, H, W] in [-1, 1]."""
    pixels = torch.from_numpy(np.array(frames, copy=True)).to(device).float() / 127.5 - 1
    return rearrange(pixels, "t h w c -> 1 c t h w")


def to_frames(pixels: torch.Tensor) -> np.ndarray:
    """[1, 3, T, H, W] in [-1, 1] -> [T, H, W, 3] uint8."""
    scaled = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(scaled, "c t h w -> t h w c").cpu().numpy()


def face_mask_from_box(box, image_size, video_size, grid, latent_frames) -> torch.Tensor:
    """A face box (x0, y0, x1, y1) in pixels of the input image of (height, width) -> [1, F, h, w]
    on AIM's token grid after the resize-and-crop to `video_size`: 1 on every token the box
    touches. No box -> ones (the audio may act anywhere)."""
    height, width = grid
    if box is None:
        return torch.ones(1, latent_frames, height, width)
    scale, left, top = cover_transform(image_size, video_size)
    x0, y0, x1, y1 = ((box[0] * scale - left), (box[1] * scale - top), (box[2] * scale - left), (box[3] * scale - top))
    cell_y, cell_x = video_size[0] / height, video_size[1] / width
    row0, col0 = int(np.clip(y0 // cell_y, 0, height - 1)), int(np.clip(x0 // cell_x, 0, width - 1))
    row1, col1 = int(np.clip(np.ceil(y1 / cell_y), row0 + 1, height)), int(np.clip(np.ceil(x1 / cell_x), col0 + 1, width))
    mask = torch.zeros(height, width)
    mask[row0:row1, col0:col1] = 1.0
    return mask.expand(1, latent_frames, height, width).clone()


class InteractAvatarPipeline:
    def __init__(self, bundle: ModelBundle, device: torch.device | str = "cpu"):
        self.bundle = bundle
        self.cfg = bundle.cfg
        self.device = torch.device(device)

    @functools.cached_property
    def negative_text(self) -> torch.Tensor:
        """The negative prompt's features, encoded once: they are the same for every request."""
        return self.bundle.text_encoder([self.cfg.sampler.negative_prompt])[0]

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu") -> InteractAvatarPipeline:
        return cls(load_bundle(directory, device), device)

    @torch.no_grad()
    def __call__(
        self,
        image: np.ndarray,
        text: str,
        audio: np.ndarray,
        *,
        mode: str = "interact",
        num_frames: int | None = None,
        steps: int | None = None,
        text_scale: float | None = None,
        audio_scale: float | None = None,
        seed: int = 0,
        face_box: tuple[float, float, float, float] | None = None,
        pose_video: np.ndarray | None = None,
        object_image: np.ndarray | None = None,
        pose_image: np.ndarray | None = None,
        progress=None,
    ) -> GenerationResult:
        """image: [H, W, 3] uint8 reference; audio: [S] float32 at 16 kHz (see io.media.load_speech);
        pose_video: [T, H', W', 3] uint8 motion frames for mode "pose"; face_box in image pixels.

        The release's frame layout: the reference image is the video's clean first frame and the
        object image (fitted on white; none: a white image) its back frame; the reference's pose
        image (the release's `dwpose_img`) is the motion's first frame and the reference at motion
        size its back frame. Without a pose image PIM first draws it from the reference image (the
        detection task, one motion frame)."""
        # The sizes this input gets (the release's rule: its aspect ratio; else the config's own).
        cfg, bundle, device = self.cfg.sizes_for(*image.shape[:2]), self.bundle, self.device
        sampler, audio_cfg = cfg.sampler, cfg.audio
        timings: dict[str, float] = {}
        start = time.perf_counter()
        frames = frame_count(len(audio) / audio_cfg.sample_rate, audio_cfg.fps, num_frames or cfg.num_frames,
                             cfg.vae.temporal_compression)
        if pose_video is not None:
            frames = min(frames, (len(pose_video) - 1) // cfg.vae.temporal_compression * cfg.vae.temporal_compression + 1)
        latent_frames = cfg.latent_frames_for(frames)
        speech = fit_to_frames(audio, frames, audio_cfg.fps, audio_cfg.sample_rate)

        text_features = bundle.text_encoder([text])[0]
        waveform = torch.from_numpy(speech).to(device)
        audio_windows = window_features(bundle.audio_encoder(waveform, frames), audio_cfg.window)[None]
        encode = lambda frames: bundle.vae.encode(to_pixels(frames[None], device))  # noqa: E731  one image
        video_prefix = encode(resize_and_crop(image, cfg.video_size))
        video_back = encode(fit_on_white(object_image, cfg.video_size))
        motion_back = encode(resize_and_crop(image, cfg.motion_size))
        motion_prefix = None if pose_image is None else encode(resize_and_crop(pose_image, cfg.motion_size))
        negative = self.negative_text if sampler.negative_prompt else null_text(text_features)
        driving_motion = None
        if mode == "pose":
            if pose_video is None:
                raise ValueError("generate: mode 'pose' needs a pose video")
            resized = np.stack([resize_and_crop(frame, cfg.motion_size) for frame in pose_video[:frames]])
            driving_motion = bundle.vae.encode(to_pixels(resized, device))
        face_mask = face_mask_from_box(face_box, image.shape[:2], cfg.video_size, cfg.token_grid, latent_frames).to(device)
        timings["encode_s"] = time.perf_counter() - start

        start = time.perf_counter()
        settings = dict(steps=steps or sampler.steps, shift=sampler.shift, guidance=sampler.guidance,
                        text_scale=sampler.text_scale if text_scale is None else text_scale,
                        audio_scale=sampler.audio_scale if audio_scale is None else audio_scale,
                        skip_block=sampler.skip_block, skip_above=sampler.skip_above, seed=seed)
        cond = Conditioning(text_features, negative, video_prefix, video_back, motion_prefix, motion_back,
                            audio_windows, driving_motion, face_mask)
        if motion_prefix is None and mode in ("interact", "motion"):
            _, motion_prefix = sample(bundle.model, cond, mode="motion", latent_frames=1, **settings)
            cond.motion_prefix = motion_prefix
        on_step = None if progress is None else lambda step, total, video, motion: progress(step, total)
        video_latents, motion_latents = sample(bundle.model, cond, mode=mode, latent_frames=latent_frames,
                                               on_step=on_step, **settings)
        timings["sample_s"] = time.perf_counter() - start

        start = time.perf_counter()
        video = None if video_latents is None else to_frames(bundle.vae.decode(video_latents))
        if motion_latents is None and driving_motion is not None:
            motion_latents = driving_motion
        motion = None if motion_latents is None else to_frames(bundle.vae.decode(motion_latents))
        timings["decode_s"] = time.perf_counter() - start
        return GenerationResult(video, motion, speech, audio_cfg.fps, audio_cfg.sample_rate, timings)
