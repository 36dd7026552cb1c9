"""A held-out clip's ground truth, brought to a model's sizes the way the pipeline sees its input.

The pipeline takes the clip's first frame and resizes it to cover the video size, then centre-crops
(`media.resize_and_crop`); the ground-truth frames, keypoints and boxes go through that same
transform, so that generated and true frames line up pixel for pixel. The true motion video is
rendered from the transformed keypoints with the data package's renderer at the motion size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interactavatar.config import InteractAvatarConfig
from interactavatar.data.dataset import Crop
from interactavatar.data.render import DecodedFrame, decode_frame, render_clip
from interactavatar.data.schema import ClipMeta, read_clip, read_manifest, read_meta
from interactavatar.io.media import (
    cover_transform,
    crop_box,
    normalize_loudness,
    read_audio,
    read_video,
    resize_and_crop,
)
from interactavatar.model.audio import fit_to_frames, frame_count


@dataclass
class ClipTruth:
    """One clip at the model's sizes (T frames, H x W video, Hm x Wm motion).

    Pipeline inputs: image [H0, W0, 3] uint8 (the clip's first frame as stored), text, speech [S0]
    float32 (the whole clip, loudness-normalised), face_box_source (x0, y0, x1, y1) in image pixels,
    object_image [h, w, 3] uint8: the target object cropped from `image` by its box where the video
    keeps it, as the training dataset crops it (the pipeline fits it on white), None without a target.
    Ground truth: video [T, H, W, 3] uint8; motion [T, Hm, Wm, 3] uint8 rendered; motion_decoded:
    T DecodedFrames read back from `motion` (what the motion format can show); other_boxes: T arrays
    [n, 4] of the non-target objects' boxes in motion pixels; face [T, 4] in video pixels;
    audio [T * sample_rate / fps] float32, the speech cut to the frames.
    """

    clip_id: str
    text: str
    image: np.ndarray
    speech: np.ndarray
    face_box_source: tuple[float, float, float, float]
    object_image: np.ndarray | None
    video: np.ndarray
    motion: np.ndarray
    motion_decoded: list[DecodedFrame]
    other_boxes: list[np.ndarray]
    face: np.ndarray
    audio: np.ndarray
    fps: int
    sample_rate: int

    @property
    def num_frames(self) -> int:
        return len(self.video)


def split_clips(root: str | Path, split: str, limit: int | None = None) -> list[Path]:
    """Clip folders of one split in manifest order, the first `limit` of them; each checked as the
    training loader checks it (data/schema.read_clip: inside the dataset, reached without a link)."""
    root = Path(root)
    folders = [read_clip(root, entry)[1].folder for entry in read_manifest(root) if entry.split == split]
    if not folders:
        raise ValueError(f"{root}: no clips in split {split!r}")
    return folders[:limit] if limit else folders


def load_truth(clip_dir: str | Path, config: InteractAvatarConfig) -> ClipTruth:
    """Read a clip and transform it to `config`'s sizes, frame rate and frame count (the count the
    pipeline derives from the speech's length)."""
    clip_dir = Path(clip_dir)
    meta = read_meta(clip_dir)
    frames, stored_fps = read_video(clip_dir / meta.video)
    rate, sample_rate = config.audio.fps, config.audio.sample_rate
    speech = normalize_loudness(read_audio(clip_dir / (meta.audio or meta.video), sample_rate), sample_rate)
    count = frame_count(len(speech) / sample_rate, rate, config.num_frames, config.vae.temporal_compression)
    available = min(len(frames), meta.num_frames)
    # Nearest stored frame for each model frame, as the training dataset picks them.
    picks = np.minimum(np.round(np.arange(count) * stored_fps / rate).astype(int), available - 1)

    source = (meta.height, meta.width)
    config = config.sizes_for(*source)  # the sizes the pipeline gives this clip's reference image
    to_video = _CoverMap(source, config.video_size)
    video = np.stack([resize_and_crop(frames[p], config.video_size) for p in picks])
    body, left_hand, right_hand = (to_video.points(points[picks]) for points in
                                   (meta.body, meta.left_hand, meta.right_hand))
    motion = render_clip(body, left_hand, right_hand, to_video.boxes(meta.target_boxes()[picks]),
                         config.motion_size, config.video_size)
    to_motion = _CoverMap(source, config.motion_size)
    return ClipTruth(
        clip_id=meta.clip_id,
        text=meta.text,
        image=frames[0],
        speech=speech,
        face_box_source=tuple(float(v) for v in meta.face[0]),
        object_image=object_crop(frames[0], meta.target_boxes()[0], config.video_size),
        video=video,
        motion=motion,
        motion_decoded=[decode_frame(frame) for frame in motion],
        other_boxes=[to_motion.boxes(_other_boxes(meta, p)) for p in picks],
        face=to_video.boxes(meta.face[picks]),
        audio=fit_to_frames(speech, count, rate, sample_rate),
        fps=rate,
        sample_rate=sample_rate,
    )


def object_crop(image: np.ndarray, box: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """The object image of a reference image [H0, W0, 3]: its pixels in `box` (image pixels; NaN: no
    target) inside the centre crop to `size`'s aspect, as `ClipDataset` takes it; None when none of it
    is in view."""
    crop = crop_box(image, Crop.centre(image.shape[:2], size).source_box(box))
    return None if crop is None else crop.copy()


class _CoverMap:
    """Pixel coordinates of a (height, width) source -> the scale-to-cover, centre-crop target."""

    def __init__(self, source: tuple[int, int], target: tuple[int, int]):
        self.scale, self.left, self.top = cover_transform(source, target)

    def points(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] (x, y, conf); invisible points (conf <= 0) stay (0, 0, 0)."""
        out = points.astype(np.float64).copy()
        out[..., 0] = points[..., 0] * self.scale - self.left
        out[..., 1] = points[..., 1] * self.scale - self.top
        out[points[..., 2] <= 0] = 0.0
        return out

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """[..., 4] (x0, y0, x1, y1); NaN stays NaN."""
        shift = np.array([self.left, self.top, self.left, self.top], dtype=np.float64)
        return np.asarray(boxes, dtype=np.float64) * self.scale - shift


def _other_boxes(meta: ClipMeta, frame: int) -> np.ndarray:
    boxes = [box.as_array() for box in meta.objects[frame] if not box.target]
    return np.stack(boxes) if boxes else np.zeros((0, 4))
