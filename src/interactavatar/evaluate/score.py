"""Score one clip's output (video and motion) against its ground truth, and average over clips."""

from __future__ import annotations

import numpy as np

from interactavatar.data.render import decode_frame
from interactavatar.evaluate.metrics import (
    audio_envelope,
    envelope_change,
    grounding_metrics,
    identity_similarity,
    mouth_motion,
    static_region,
    sync_scores,
    temporal_stability,
    video_quality,
)
from interactavatar.evaluate.truth import ClipTruth

# Per-clip values that become a different dataset-level name.
RENAMED = {"wrong_object": "wrong_object_rate", "hand_wrong_object": "hand_wrong_object_rate"}


def score_clip(video: np.ndarray, motion: np.ndarray, truth: ClipTruth, max_offset: int = 4) -> dict[str, float | None]:
    """video [T, H, W, 3] and motion [T, Hm, Wm, 3] uint8 at the truth's sizes -> every metric of
    the clip (None where the clip cannot say, e.g. no hand contact in its ground truth)."""
    if video.shape[1:] != truth.video.shape[1:] or motion.shape[1:] != truth.motion.shape[1:]:
        raise ValueError(f"{truth.clip_id}: output sizes {video.shape[1:]} / {motion.shape[1:]} differ from the "
                         f"truth's {truth.video.shape[1:]} / {truth.motion.shape[1:]}")
    frames = min(len(video), len(motion), truth.num_frames)
    video, motion, true_video = video[:frames], motion[:frames], truth.video[:frames]
    metrics = grounding_metrics([decode_frame(frame) for frame in motion], truth.motion_decoded[:frames],
                                truth.other_boxes[:frames], short_side=min(motion.shape[1:3]))
    loudness = audio_envelope(truth.audio, frames, truth.fps, truth.sample_rate)
    confidence, offset = sync_scores(mouth_motion(video, truth.face[:frames]), envelope_change(loudness), max_offset)
    metrics.update(sync_confidence=confidence, sync_offset=float(offset))
    metrics["identity_similarity"] = identity_similarity(video, true_video[0], static_region(true_video))
    metrics.update(video_quality(video, true_video))
    metrics["temporal_stability"] = temporal_stability(video)
    return metrics


def aggregate(per_clip: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Mean of each metric over the clips that define it (sync_offset: the median, an offset in
    frames); `num_clips` counts the clips."""
    names = list(dict.fromkeys(name for clip in per_clip for name in clip))
    summary: dict[str, float | None] = {}
    for name in names:
        values = [clip[name] for clip in per_clip if clip.get(name) is not None]
        reduce = np.median if name == "sync_offset" else np.mean
        summary[RENAMED.get(name, name)] = float(reduce(values)) if values else None
    summary["num_clips"] = float(len(per_clip))
    return summary
