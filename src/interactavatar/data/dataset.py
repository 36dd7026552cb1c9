"""The training dataset: clips resampled to a model config's frame count, rate and sizes.

Every clip goes through one geometric transform (temporal resampling, centre crop to the target
aspect, resize), applied alike to the video, the keypoints and the boxes; the motion video is then
rendered from the transformed keypoints at the motion size, so motion and video always agree.

Clips are reached through `schema.read_clip`, which refuses paths that leave the dataset and files
behind symbolic links: training may run on a folder nobody validated, and must then read exactly
the bytes the dataset's hash and version describe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from interactavatar.config import InteractAvatarConfig
from interactavatar.data.render import render_clip
from interactavatar.data.schema import ClipFiles, ClipMeta, read_clip, read_manifest
from interactavatar.io.media import crop_box, fit_on_white, normalize_loudness, read_audio, read_video

CURRICULUM_TASKS = ("detection", "continuation", "generation")


@dataclass(frozen=True)
class Crop:
    """Centre crop (x0, y0, width, height) of the source frame, then a resize to `size` (H, W)."""

    x0: float
    y0: float
    width: float
    height: float
    size: tuple[int, int]

    @classmethod
    def centre(cls, source: tuple[int, int], size: tuple[int, int]) -> Crop:
        (sh, sw), (h, w) = source, size
        if sw * h > sh * w:
            width = sh * w / h
            return cls((sw - width) / 2, 0.0, width, float(sh), size)
        height = sw * h / w
        return cls(0.0, (sh - height) / 2, float(sw), height, size)

    def points(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] keypoints (x, y, conf) -> target pixels; points cropped away get conf 0."""
        out = points.astype(np.float64).copy()
        out[..., 0] = (points[..., 0] - self.x0) * self.size[1] / self.width
        out[..., 1] = (points[..., 1] - self.y0) * self.size[0] / self.height
        inside = ((out[..., 0] >= 0) & (out[..., 0] <= self.size[1] - 1)
                  & (out[..., 1] >= 0) & (out[..., 1] <= self.size[0] - 1))
        out[~inside | (points[..., 2] <= 0)] = 0.0
        return out

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """[..., 4] -> target pixels, clipped to the frame (NaN stays NaN)."""
        sx, sy = self.size[1] / self.width, self.size[0] / self.height
        out = (boxes - [self.x0, self.y0, self.x0, self.y0]) * [sx, sy, sx, sy]
        return np.clip(out, 0, [self.size[1] - 1, self.size[0] - 1] * 2)

    def window(self) -> tuple[int, int, int, int]:
        """The source pixels the crop keeps: (x0, y0, x1, y1), x1 and y1 excluded."""
        x0, y0 = int(round(self.x0)), int(round(self.y0))
        return x0, y0, x0 + int(round(self.width)), y0 + int(round(self.height))

    def source_box(self, box: np.ndarray) -> np.ndarray:
        """[4] a box in source pixels -> the part of it inside the crop, in source pixels: what of the
        box the model sees, at the source's resolution. NaN (no box, or none of it in view) stays NaN."""
        x0, y0, x1, y1 = self.window()
        box = np.asarray(box, dtype=np.float64)
        if not np.all(np.isfinite(box)) or box[2] < x0 or box[0] > x1 - 1 or box[3] < y0 or box[1] > y1 - 1:
            return np.full(4, np.nan)
        return np.clip(box, [x0, y0, x0, y0], [x1 - 1, y1 - 1, x1 - 1, y1 - 1])

    def image(self, frames: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
        """[N, H0, W0, 3] uint8 -> [3, N, h, w] float in [-1, 1] (antialiased bilinear resize)."""
        size = size or self.size
        x0, y0, x1, y1 = self.window()
        cropped = frames[:, y0:y1, x0:x1]
        if tuple(cropped.shape[1:3]) == tuple(size):
            return unit_range(cropped.transpose(3, 0, 1, 2))
        pixels = torch.from_numpy(np.ascontiguousarray(cropped.transpose(0, 3, 1, 2))).float()
        resized = F.interpolate(pixels, size=size, mode="bilinear", antialias=True, align_corners=False)
        return resized.clamp_(0, 255).div_(127.5).sub_(1.0).permute(1, 0, 2, 3).contiguous()


_UNIT_RANGE = np.arange(256, dtype=np.float32) / 127.5 - 1.0


def unit_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 0..255 -> float32 -1..1 (a table lookup: one pass, no thread hand-offs)."""
    return torch.from_numpy(np.ascontiguousarray(_UNIT_RANGE[pixels]))


class ClipDataset(Dataset):
    """Clips of one split of a dataset folder, shaped for `config`.

    Each item (F = config.num_frames, L = config.latent_frames, H x W = video_size,
    Hm x Wm = motion_size, S = F / fps * sample_rate):
      video [3, F, H, W], motion [3, F, Hm, Wm], motion_reference [3, 1, Hm, Wm] (the reference
      image, frame 0, at the motion size), object_image [3, H, W] (the target object cropped from
      frame 0 by its box, the part inside the crop, fitted on white as `media.fit_on_white` does;
      all white without a target): float in [-1, 1];
      audio [S] (16 kHz mono, -23 LUFS unless near-silent, cut or zero-padded to the frames);
      face_mask [L, H/c, W/c] (c = vae.spatial_compression): 1 on latent cells touching the face;
      body [F, 18, 3], left_hand / right_hand [F, 21, 3], target_box [F, 4] (NaN: no target),
      all in video_size pixels; text (str), clip_id (str).

    Clips longer than F frames are cut from `start` ("first" frame, or "random"); shorter ones
    hold their last frame (and their audio is zero-padded).

    The release's frame layout takes the reference image (frame 0) as the video's clean first
    frame and the object image as its back frame; frame 0's pose (motion frame 0) as the motion's
    first frame and the reference at motion size as its back frame.
    """

    def __init__(self, root: str | Path, config: InteractAvatarConfig, split: str | None = "train",
                 start: str = "first", cache_motion: bool = True) -> None:
        if start not in ("first", "random"):
            raise ValueError(f"dataset: start={start!r}, expected first or random")
        self.root = Path(root)
        self.config = config
        self.entries = [e for e in read_manifest(self.root) if split is None or e.split == split]
        if not self.entries:
            raise ValueError(f"{self.root}: no clips in split {split!r}")
        self.start = start
        # Parsing meta.json and rendering motion cost more than decoding the video: keep both.
        self._clip_cache: dict[int, tuple[ClipMeta, ClipFiles]] = {}
        self._motion_cache: dict[tuple[int, int], torch.Tensor] | None = {} if cache_motion else None

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index not in self._clip_cache:
            self._clip_cache[index] = read_clip(self.root, self.entries[index])
        meta, files = self._clip_cache[index]
        frames, fps = read_video(files.video)
        config = self.config
        rate, count = config.audio.fps, config.num_frames
        available = min(len(frames), meta.num_frames)
        needed = int(np.ceil((count - 1) * fps / rate)) + 1
        start = 0
        if self.start == "random" and available > needed:
            start = int(torch.randint(available - needed + 1, ()).item())
        picks = np.minimum(start + np.round(np.arange(count) * fps / rate).astype(int), available - 1)

        crop = Crop.centre((meta.height, meta.width), config.video_size)
        video = crop.image(frames[picks])
        body, left_hand, right_hand = (crop.points(a[picks]) for a in (meta.body, meta.left_hand, meta.right_hand))
        target_box = crop.boxes(meta.target_boxes()[picks])
        face = crop.boxes(meta.face[picks])
        motion = self._motion(index, start, body, left_hand, right_hand, target_box)
        audio = self._audio(files.speech, start / fps, count / rate)
        return {
            "video": video,
            "motion": motion,
            "motion_reference": crop.image(frames[picks[:1]], config.motion_size),
            "object_image": object_image(frames[picks[0]], meta.target_boxes()[picks[0]], crop),
            "audio": audio,
            "face_mask": face_mask(face, config),
            "body": torch.from_numpy(body).float(),
            "left_hand": torch.from_numpy(left_hand).float(),
            "right_hand": torch.from_numpy(right_hand).float(),
            "target_box": torch.from_numpy(target_box).float(),
            "text": meta.text,
            "clip_id": meta.clip_id,
        }

    def _motion(self, index: int, start: int, body: np.ndarray, left_hand: np.ndarray,
                right_hand: np.ndarray, target_box: np.ndarray) -> torch.Tensor:
        key = (index, start)
        if self._motion_cache is not None and key in self._motion_cache:
            return self._motion_cache[key]
        frames = render_clip(body, left_hand, right_hand, target_box, self.config.motion_size, self.config.video_size)
        motion = unit_range(frames.transpose(3, 0, 1, 2))
        if self._motion_cache is not None:
            self._motion_cache[key] = motion
        return motion

    def _audio(self, speech: Path, offset: float, seconds: float) -> torch.Tensor:
        rate = self.config.audio.sample_rate
        samples = read_audio(speech, rate)
        samples = normalize_loudness(samples, rate)  # as inference prepares speech: one rule
        first, length = int(round(offset * rate)), int(round(seconds * rate))
        out = np.zeros(length, np.float32)
        piece = samples[first: first + length]
        out[: len(piece)] = piece
        return torch.from_numpy(out)


def object_image(frame: np.ndarray, box: np.ndarray, crop: Crop) -> torch.Tensor:
    """The object image of a clip: the source frame [H0, W0, 3] uint8 cropped by `box` (source
    pixels; NaN: no target) where the crop keeps it, fitted on white at the crop's size ->
    [3, H, W] in [-1, 1]; all white when no part of a target is in view."""
    fitted = fit_on_white(crop_box(frame, crop.source_box(box)), crop.size)
    return unit_range(fitted.transpose(2, 0, 1))


def face_mask(face: np.ndarray, config: InteractAvatarConfig) -> torch.Tensor:
    """face: [F, 4] boxes in video pixels -> [L, H/c, W/c]: 1 on latent cells that overlap the face
    in any video frame of that latent frame. Empty boxes give an empty mask."""
    c = config.vae.spatial_compression
    compression = config.vae.temporal_compression
    mask = torch.zeros(config.latent_frames, *config.latent_grid)
    for latent in range(config.latent_frames):
        first = max(0, compression * (latent - 1) + 1)
        for x0, y0, x1, y1 in face[first: compression * latent + 1]:
            if not np.all(np.isfinite([x0, y0, x1, y1])) or x1 <= x0 or y1 <= y0:
                continue
            mask[latent, int(y0 // c): int(y1 // c) + 1, int(x0 // c): int(x1 // c) + 1] = 1.0
    return mask


def curriculum_sample(item: dict[str, Any], task: str) -> dict[str, Any]:
    """One of PIM's three pretraining samples from a dataset item (the paper's curriculum):

    detection: the motion of the reference image alone (motion [3, 1, Hm, Wm]): scene parsing;
    continuation: the whole motion with its first latent frame given clean;
    generation: the whole motion from image and text.
    `clean_latent_frames` says how many leading motion latent frames keep timestep 0. Batch items
    of one task together: detection's motion has one frame.
    """
    if task not in CURRICULUM_TASKS:
        raise ValueError(f"curriculum: task={task!r}, expected one of {CURRICULUM_TASKS}")
    sample = dict(item, task=task, clean_latent_frames=1 if task == "continuation" else 0)
    if task == "detection":
        sample["motion"] = item["motion"][:, :1]
    return sample


def curriculum_task(step: int) -> str:
    """The task for a training step: the three alternate."""
    return CURRICULUM_TASKS[step % len(CURRICULUM_TASKS)]
