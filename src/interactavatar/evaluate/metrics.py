"""Evaluation metrics: pure functions of generated frames and ground truth, deterministic.

Motion metrics compare what `decode_frame` reads out of a generated motion frame with what it reads
out of the ground truth rendered in the same format (`ClipTruth.motion_decoded`). Comparing against
the rendered truth, not the raw keypoints, cancels the decoder's own error: at 32 px a limb drawn
over a box edge hides it, and a finger's colour can be covered, so even perfect motion would not
decode to the raw geometry. On ground truth every motion metric is then exactly perfect.

Boxes are inclusive pixel extents (x0, y0, x1, y1), as `decode_frame` returns them.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from interactavatar.data.render import DecodedFrame

# Wrist and the five fingertips: the points that touch an object.
HAND_CONTACT_POINTS = (0, 4, 8, 12, 16, 20)
PSNR_CAP_DB = 100.0  # identical frames have infinite PSNR; JSON and MLflow need a number


def box_iou(predicted: np.ndarray | None, truth: np.ndarray | None) -> float:
    """IoU of two inclusive pixel boxes [4]; a missing box (None) scores 0."""
    if predicted is None or truth is None:
        return 0.0
    x0, y0 = np.maximum(predicted[:2], truth[:2])
    x1, y1 = np.minimum(predicted[2:], truth[2:])
    overlap = max(0.0, x1 - x0 + 1) * max(0.0, y1 - y0 + 1)
    area = (predicted[2:] - predicted[:2] + 1).prod() + (truth[2:] - truth[:2] + 1).prod() - overlap
    return float(overlap / area)


def point_box_distance(point: np.ndarray, box: np.ndarray) -> float:
    """Euclidean distance from a point (x, y) to a box [4]; 0 inside it."""
    dx = max(box[0] - point[0], 0.0, point[0] - box[2])
    dy = max(box[1] - point[1], 0.0, point[1] - box[3])
    return float(np.hypot(dx, dy))


def wrong_object(predicted: np.ndarray | None, target: np.ndarray, others: np.ndarray) -> bool:
    """Whether a decoded box [4] marks another object: missing, or its centre nearer one of
    `others` [n, 4] than the target [4] (a tie goes to the target: boxes may overlap)."""
    if predicted is None:
        return True
    centre = (predicted[:2] + predicted[2:]) / 2
    to_target = point_box_distance(centre, target)
    return any(point_box_distance(centre, other) < to_target for other in others)


def hand_touches(hand: np.ndarray, box: np.ndarray | None, margin: float) -> bool:
    """Whether a visible wrist or fingertip of `hand` [21, 3] lies within `margin` px of `box`."""
    if box is None:
        return False
    points = hand[list(HAND_CONTACT_POINTS)]
    return any(point_box_distance(p[:2], box) <= margin for p in points if p[2] > 0)


def acting_hand(truth: list[DecodedFrame], margin: float) -> str:
    """The hand that interacts in the ground truth: the one touching the target box in more frames,
    on a tie the one that comes nearest to it."""
    scores = {}
    for side in ("right_hand", "left_hand"):
        touching = sum(hand_touches(getattr(f, side), f.box, margin) for f in truth)
        nearest = min((point_box_distance(p[:2], f.box) for f in truth if f.box is not None
                       for p in getattr(f, side)[list(HAND_CONTACT_POINTS)] if p[2] > 0), default=np.inf)
        scores[side] = (touching, -nearest)
    return max(scores, key=scores.get)


def contact_accuracy(predicted: list[DecodedFrame], truth: list[DecodedFrame], margin: float) -> float | None:
    """Over the frames where the truth's acting hand touches the target box, the fraction where the
    predicted acting hand touches the true target box too. None when the truth has no contact."""
    side = acting_hand(truth, margin)
    contact = [(p, t) for p, t in zip(predicted, truth, strict=True) if hand_touches(getattr(t, side), t.box, margin)]
    if not contact:
        return None
    return float(np.mean([hand_touches(getattr(p, side), t.box, margin) for p, t in contact]))


def hand_wrong_object(predicted: list[DecodedFrame], truth: list[DecodedFrame], other_boxes: list[np.ndarray],
                      margin: float) -> float | None:
    """Whether the acting hand goes to another object: over the frames where the truth's acting hand
    touches the target and the predicted acting hand shows a wrist or fingertip, the fraction where
    that hand does not touch the target (within `margin`) and lies nearer one of `other_boxes`.
    None when the clip shows no contact, no other object, or the prediction no hand there. The
    hand's counterpart of `wrong_object`: with several objects on the table, does the hand pick the
    one the sentence names. Read it with `contact_accuracy`, which counts a missing hand."""
    side = acting_hand(truth, margin)
    wrong = []
    for p, t, others in zip(predicted, truth, other_boxes, strict=True):
        points = getattr(p, side)[list(HAND_CONTACT_POINTS)]
        visible = points[points[:, 2] > 0, :2]
        if len(others) and len(visible) and hand_touches(getattr(t, side), t.box, margin):
            to_target = min(point_box_distance(q, t.box) for q in visible)
            nearer_another = any(point_box_distance(q, other) < to_target for q in visible for other in others)
            wrong.append(nearer_another and not hand_touches(getattr(p, side), t.box, margin))
    return float(np.mean(wrong)) if wrong else None


def pck(predicted: np.ndarray, truth: np.ndarray, threshold: float) -> float | None:
    """Percentage of correct keypoints: predicted [..., K, 3] vs truth [..., K, 3]. Over the truth's
    visible points (conf > 0), the fraction predicted visible and within `threshold` px.
    None when the truth shows no point."""
    visible = truth[..., 2] > 0
    if not visible.any():
        return None
    distance = np.linalg.norm(predicted[..., :2] - truth[..., :2], axis=-1)
    correct = (predicted[..., 2] > 0) & (distance <= threshold)
    return float(correct[visible].mean())


def grounding_metrics(predicted: list[DecodedFrame], truth: list[DecodedFrame], other_boxes: list[np.ndarray],
                      short_side: int, contact_margin: float = 0.05,
                      pck_thresholds: tuple[float, float] = (0.1, 0.05)) -> dict[str, float | None]:
    """One clip's object and hand quality from decoded motion frames (T each) and the non-target
    boxes per frame. Thresholds are fractions of the motion frame's short side. Frames whose truth
    shows no box are left out of the box metrics; a clip's `wrong_object` is 1 when more than half
    of those frames mark another object or none."""
    boxed = [(p, t, o) for p, t, o in zip(predicted, truth, other_boxes, strict=True) if t.box is not None]
    wrong = [wrong_object(p.box, t.box, o) for p, t, o in boxed]
    metrics: dict[str, float | None] = {
        "grounding_iou": float(np.mean([box_iou(p.box, t.box) for p, t, _ in boxed])) if boxed else None,
        "wrong_object": float(np.mean(wrong) > 0.5) if boxed else None,
        "box_detection_rate": float(np.mean([p.box is not None for p in predicted])),
        "contact_accuracy": contact_accuracy(predicted, truth, contact_margin * short_side),
        "hand_wrong_object": hand_wrong_object(predicted, truth, other_boxes, contact_margin * short_side),
    }
    body_pred, body_truth = np.stack([f.body for f in predicted]), np.stack([f.body for f in truth])
    hands_pred = np.stack([np.concatenate([f.left_hand, f.right_hand]) for f in predicted])
    hands_truth = np.stack([np.concatenate([f.left_hand, f.right_hand]) for f in truth])
    for index, fraction in enumerate(pck_thresholds):
        suffix = "" if index == 0 else f"_{fraction}"
        metrics[f"pck_body{suffix}"] = pck(body_pred, body_truth, fraction * short_side)
        metrics[f"pck_hands{suffix}"] = pck(hands_pred, hands_truth, fraction * short_side)
    return metrics


def audio_envelope(audio: np.ndarray, num_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """[S] -> [num_frames] RMS of each video frame's samples (0 past the end)."""
    per_frame = sample_rate / fps
    bounds = np.round(np.arange(num_frames + 1) * per_frame).astype(int)
    return np.array([np.sqrt(np.mean(audio[a:b] ** 2)) if len(audio[a:b]) else 0.0
                     for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def envelope_change(envelope: np.ndarray) -> np.ndarray:
    """[T] -> [T - 1] how much the loudness changes into each frame: what a mouth's motion follows
    (it opens as a syllable starts and closes as it ends)."""
    return np.abs(np.diff(envelope))


def mouth_motion(frames: np.ndarray, face_boxes: np.ndarray) -> np.ndarray:
    """frames [T, H, W, 3] uint8, face_boxes [T, 4] -> [T - 1]: mean absolute pixel change into
    each frame inside the mouth window (the lower half and central half-width of the face box; its
    size fixed by the first box). Change, not darkness: an open mouth is darker than light skin but
    not than dark skin.

    The window follows the box at sub-pixel positions (bilinear): at small sizes a window rounded
    to whole pixels jumps a pixel as the head moves, at other moments than the mouth does, and that
    jump is as large as the mouth's own change (88 px video: 4 of 12 true clips scored off sync)."""
    height, width = frames.shape[1:3]
    x0, y0, x1, y1 = face_boxes[0]
    window_w, window_h = max(1, round((x1 - x0) / 2)), max(1, round((y1 - y0) / 2))
    windows = []
    for frame, (a, b, c, d) in zip(frames, face_boxes, strict=True):
        left = float(np.clip((a + c) / 2 - window_w / 2, 0, width - window_w))
        top = float(np.clip((b + d) / 2, 0, height - window_h))
        windows.append(_bilinear_window(frame.astype(np.float64), top, left, window_h, window_w))
    return np.abs(np.diff(np.stack(windows), axis=0)).mean(axis=(1, 2, 3)) / 255.0


def _bilinear_window(image: np.ndarray, top: float, left: float, height: int, width: int) -> np.ndarray:
    """The [height, width, C] window of image [H, W, C] whose first pixel centre sits at (top, left),
    sampled bilinearly (edges clamped)."""
    def axis(start: float, count: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        points = np.clip(start + np.arange(count), 0, size - 1)
        low = np.floor(points).astype(int)
        return low, np.minimum(low + 1, size - 1), points - low

    (y0, y1, wy), (x0, x1, wx) = axis(top, height, image.shape[0]), axis(left, width, image.shape[1])
    wy, wx = wy[:, None, None], wx[None, :, None]
    rows0, rows1 = image[y0], image[y1]
    return ((rows0[:, x0] * (1 - wx) + rows0[:, x1] * wx) * (1 - wy)
            + (rows1[:, x0] * (1 - wx) + rows1[:, x1] * wx) * wy)


def sync_scores(mouth: np.ndarray, audio: np.ndarray, max_offset: int = 4,
                min_overlap: int = 3) -> tuple[float, int]:
    """SyncNet-style offset search between a mouth signal [T] and an audio signal [T] (here
    `mouth_motion` and `envelope_change`).

    At offset k the mouth at frame t is compared with the audio at frame t + k (k > 0: the audio
    lags the video by k frames), by Pearson correlation over the overlapping frames (at least
    `min_overlap`; a constant signal correlates 0). Returns (confidence, offset): the peak minus the
    median correlation over offsets, and the offset of the peak (the smallest |k| among equals)."""
    frames = len(mouth)
    reach = max(0, min(max_offset, frames - min_overlap))
    offsets = sorted(range(-reach, reach + 1), key=abs)
    correlations = []
    for k in offsets:
        a, b = (mouth[: frames - k], audio[k:]) if k >= 0 else (mouth[-k:], audio[: frames + k])
        correlations.append(_pearson(a, b))
    correlations = np.array(correlations)
    best = int(np.argmax(correlations))
    return float(correlations[best] - np.median(correlations)), offsets[best]


def static_region(truth_video: np.ndarray, threshold: float = 24.0, grow: int | None = None) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [H, W] bool: pixels that never change by more than `threshold` from the
    first frame, shrunk by `grow` px (default 5% of the short side) so edges of motion stay out."""
    change = np.abs(truth_video.astype(np.int16) - truth_video[:1].astype(np.int16)).max(axis=(0, 3))
    grow = max(1, round(0.05 * min(truth_video.shape[1:3]))) if grow is None else grow
    moving = ndimage.binary_dilation(change > threshold, iterations=grow) if grow else change > threshold
    return ~moving


def identity_similarity(frames: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """Mean over frames [T, H, W, 3] of the Pearson correlation with `reference` [H, W, 3] over the
    pixels of `region` [H, W] (the whole frame when it is empty): 1 for the same scene, ~0 for an
    unrelated one, indifferent to a global change of brightness."""
    region = region if region.any() else np.ones_like(region)
    target = reference[region].astype(np.float64).ravel()
    return float(np.mean([_pearson(frame[region].astype(np.float64).ravel(), target) for frame in frames]))


def video_quality(frames: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """SSIM and PSNR (torchmetrics; per frame, averaged) of frames [T, H, W, 3] uint8 against the
    ground truth; PSNR capped at PSNR_CAP_DB."""
    predicted, target = _to_tensor(frames), _to_tensor(truth)
    ssim = structural_similarity_index_measure(predicted, target, data_range=1.0)
    psnr = peak_signal_noise_ratio(predicted, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return {"ssim": float(ssim), "psnr": float(psnr.clamp(max=PSNR_CAP_DB).mean())}


def temporal_stability(frames: np.ndarray) -> float:
    """1 - mean absolute frame-to-frame difference of [T, H, W, 3] uint8, in [0, 1]: 1 for a still
    video, lower for flicker. Read it with the other metrics: a frozen video is perfectly stable."""
    if len(frames) < 2:
        return 1.0
    return float(1.0 - np.abs(np.diff(frames.astype(np.float64), axis=0)).mean() / 255.0)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 1e-12 else 0.0


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """[T, H, W, 3] uint8 -> [T, 3, H, W] float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
