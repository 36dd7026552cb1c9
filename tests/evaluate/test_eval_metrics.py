"""Metric functions on ground truth (perfect scores) and on broken inputs (known bad scores)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from interactavatar.data.render import decode_frame, render_frame
from interactavatar.evaluate.metrics import (
    PSNR_CAP_DB,
    acting_hand,
    box_iou,
    contact_accuracy,
    grounding_metrics,
    hand_touches,
    hand_wrong_object,
    identity_similarity,
    pck,
    static_region,
    sync_scores,
    temporal_stability,
    video_quality,
    wrong_object,
)
from interactavatar.evaluate.score import aggregate, score_clip


def test_ground_truth_scores_the_ceiling(truths):
    scores = [score_clip(t.video, t.motion, t) for t in truths]
    summary = aggregate(scores)
    assert summary["grounding_iou"] == 1.0
    assert summary["wrong_object_rate"] == 0.0
    assert summary["contact_accuracy"] == 1.0
    assert summary["hand_wrong_object_rate"] == 0.0
    assert summary["pck_body"] == summary["pck_hands"] == 1.0
    assert summary["pck_body_0.05"] == summary["pck_hands_0.05"] == 1.0
    assert summary["ssim"] == pytest.approx(1.0, abs=1e-4)
    assert summary["psnr"] == PSNR_CAP_DB
    assert summary["identity_similarity"] > 0.99
    assert summary["sync_confidence"] > 0.5
    assert sum(s["contact_accuracy"] is not None for s in scores) >= 3


def test_ground_truth_is_in_sync_at_the_demo_size(demo_truths):
    # Each clip's mouth follows its speech without delay. At the demo's 17 frames, not the tiny
    # preset's 5: four frame-to-frame changes are too few to place a lag (1 of 12 tiny clips misses).
    scores = [score_clip(t.video, t.motion, t) for t in demo_truths]
    assert [s["sync_offset"] for s in scores] == [0.0] * len(demo_truths)
    assert min(s["sync_confidence"] for s in scores) > 0.5


def test_black_motion_finds_nothing(truths):
    truth = truths[0]
    scores = score_clip(truth.video, np.zeros_like(truth.motion), truth)
    assert scores["grounding_iou"] == 0.0 and scores["box_detection_rate"] == 0.0
    assert scores["wrong_object"] == 1.0  # a missing box counts as wrong
    assert scores["hand_wrong_object"] is None  # no hand drawn: contact_accuracy counts that
    assert scores["pck_body"] == scores["pck_hands"] == 0.0


def _with_box(frame, box):
    """The truth's decoded keypoints redrawn with another box [4] (inclusive pixel extent)."""
    height, width = 32, 32
    return decode_frame(render_frame(frame.body, frame.left_hand, frame.right_hand, box, height, width))


def test_box_moved_onto_another_object_is_the_wrong_object(truths):
    truth = next(t for t in truths if all(len(o) for o in t.other_boxes))
    moved = [_with_box(f, others[0]) for f, others in zip(truth.motion_decoded, truth.other_boxes, strict=True)]
    scores = grounding_metrics(moved, truth.motion_decoded, truth.other_boxes, short_side=32)
    assert scores["wrong_object"] == 1.0
    assert scores["grounding_iou"] < 0.2
    right = [_with_box(f, f.box) for f in truth.motion_decoded]
    assert grounding_metrics(right, truth.motion_decoded, truth.other_boxes, short_side=32)["wrong_object"] == 0.0


def test_box_iou_and_wrong_object_by_hand():
    box = np.array([0.0, 0.0, 1.0, 1.0])  # a 2x2-pixel box
    assert box_iou(box, box) == 1.0
    assert box_iou(box, np.array([1.0, 0.0, 2.0, 1.0])) == pytest.approx(2 / 6)
    assert box_iou(box, np.array([5.0, 5.0, 6.0, 6.0])) == 0.0
    assert box_iou(None, box) == 0.0
    target, other = np.array([0.0, 0.0, 4.0, 4.0]), np.array([10.0, 0.0, 14.0, 4.0])
    assert not wrong_object(np.array([1.0, 1.0, 5.0, 3.0]), target, other[None])
    assert wrong_object(np.array([8.0, 1.0, 12.0, 3.0]), target, other[None])
    assert wrong_object(None, target, other[None])


def test_contact_fails_when_the_acting_hand_stays_away(truths):
    margin = 0.05 * 32
    truth = next(t for t in truths if contact_accuracy(t.motion_decoded, t.motion_decoded, margin) is not None)
    side = acting_hand(truth.motion_decoded, margin)
    away = [dataclasses.replace(f, **{side: getattr(f, side) + np.array([0.0, 100.0, 0.0])})
            for f in truth.motion_decoded]
    assert contact_accuracy(truth.motion_decoded, truth.motion_decoded, margin) == 1.0
    assert contact_accuracy(away, truth.motion_decoded, margin) == 0.0


def test_hand_moved_onto_another_object_picks_the_wrong_object(truths):
    margin = 0.05 * 32
    truth = next(t for t in truths if hand_wrong_object(t.motion_decoded, t.motion_decoded, t.other_boxes, margin) == 0.0)
    side = acting_hand(truth.motion_decoded, margin)
    contact = [i for i, (f, o) in enumerate(zip(truth.motion_decoded, truth.other_boxes, strict=True))
               if len(o) and hand_touches(getattr(f, side), f.box, margin)]

    def moved_onto(frame, index):
        """The acting hand shifted so that its wrist lands on the centre of another object."""
        hand = getattr(frame, side)
        if index not in contact:
            return frame
        centre = truth.other_boxes[index][0].reshape(2, 2).mean(0)
        return dataclasses.replace(frame, **{side: hand + np.append(centre - hand[0, :2], 0.0) * (hand[:, 2:] > 0)})

    moved = [moved_onto(f, i) for i, f in enumerate(truth.motion_decoded)]
    assert hand_wrong_object(moved, truth.motion_decoded, truth.other_boxes, margin) == 1.0
    hidden = [dataclasses.replace(f, **{side: np.zeros((21, 3))}) if i == contact[0] else m
              for i, (f, m) in enumerate(zip(truth.motion_decoded, moved, strict=True))]
    # A frame without the hand is left out: the others still go to the wrong object.
    assert hand_wrong_object(hidden, truth.motion_decoded, truth.other_boxes, margin) == 1.0
    half = [m if i in contact[::2] else f for i, (f, m) in enumerate(zip(truth.motion_decoded, moved, strict=True))]
    assert hand_wrong_object(half, truth.motion_decoded, truth.other_boxes, margin) == pytest.approx(
        len(contact[::2]) / len(contact))
    alone = [np.zeros((0, 4)) for _ in truth.other_boxes]
    assert hand_wrong_object(moved, truth.motion_decoded, alone, margin) is None  # one object: nothing to confuse


def test_pck_threshold_visibility_and_undefined():
    truth = np.array([[[10.0, 10.0, 1.0], [20.0, 20.0, 1.0], [0.0, 0.0, 0.0]]])
    assert pck(truth, truth, 1.0) == 1.0
    assert pck(truth + [3.0, 0.0, 0.0], truth, 2.0) == 0.0
    assert pck(truth + [3.0, 0.0, 0.0], truth, 3.0) == 1.0
    hidden = truth.copy()
    hidden[0, 0, 2] = 0.0
    assert pck(hidden, truth, 1.0) == 0.5  # a point the prediction does not show is wrong
    assert pck(truth, np.zeros_like(truth), 1.0) is None  # nothing to find: undefined, not perfect


@pytest.mark.parametrize("delay", [-3, -1, 0, 2, 3])
def test_sync_offset_finds_an_audio_delay(delay):
    signal = np.random.default_rng(5).standard_normal(80)
    mouth = signal[10:70]
    audio = signal[10 - delay: 70 - delay]  # audio[t] = mouth[t - delay]: the audio lags by `delay`
    confidence, offset = sync_scores(mouth, audio, max_offset=4)
    assert offset == delay
    assert confidence > 0.8


def test_sync_without_mouth_motion_has_no_confidence():
    audio = np.random.default_rng(0).random(16)
    assert sync_scores(np.full(16, 0.3), audio) == (0.0, 0)


def test_sync_offset_on_a_clip_with_shifted_speech(truths):
    """Score the ground-truth video against its own speech delayed by whole frames."""
    from interactavatar.evaluate.metrics import audio_envelope, envelope_change, mouth_motion

    truth = truths[0]
    mouth = mouth_motion(truth.video, truth.face)
    per_frame = truth.sample_rate // truth.fps
    for delay in (-1, 1):
        shifted = _delayed(truth.audio, delay * per_frame)
        loudness = audio_envelope(shifted, truth.num_frames, truth.fps, truth.sample_rate)
        assert sync_scores(mouth, envelope_change(loudness), max_offset=1)[1] == delay


def _delayed(audio: np.ndarray, samples: int) -> np.ndarray:
    """The audio `samples` later (negative: earlier), zero-filled, at the same length."""
    out = np.zeros_like(audio)
    if samples >= 0:
        out[samples:] = audio[: len(audio) - samples]
    else:
        out[:samples] = audio[-samples:]
    return out


def test_identity_and_video_quality(truths):
    truth = truths[0]
    region = static_region(truth.video)
    assert 0.2 < region.mean() < 1.0  # the avatar's moving parts are left out, the scene kept
    noise = np.random.default_rng(0).integers(0, 256, truth.video.shape, dtype=np.uint8)
    assert identity_similarity(truth.video, truth.video[0], region) > 0.99
    assert abs(identity_similarity(noise, truth.video[0], region)) < 0.1
    assert identity_similarity(np.zeros_like(truth.video), truth.video[0], region) == 0.0
    perfect, broken = video_quality(truth.video, truth.video), video_quality(noise, truth.video)
    assert perfect["ssim"] == pytest.approx(1.0, abs=1e-4) and perfect["psnr"] == PSNR_CAP_DB
    assert broken["ssim"] < 0.2 and broken["psnr"] < 15


def test_shuffled_frames_are_less_stable(eval_dataset):
    from interactavatar.io.media import read_video

    frames, _ = read_video(eval_dataset / "synth0-000000" / "video.mp4")
    shuffled = frames[[0, 4, 1, 3, 2]]
    assert temporal_stability(shuffled) < temporal_stability(frames) < 1.0
    assert temporal_stability(frames[:1].repeat(5, axis=0)) == 1.0


def test_aggregate_skips_undefined_and_names_rates():
    summary = aggregate([
        {"grounding_iou": 1.0, "wrong_object": 0.0, "contact_accuracy": None, "sync_offset": 0.0},
        {"grounding_iou": 0.0, "wrong_object": 1.0, "contact_accuracy": 0.5, "sync_offset": 2.0},
        {"grounding_iou": 0.5, "wrong_object": 1.0, "contact_accuracy": None, "sync_offset": 3.0},
    ])
    assert summary["grounding_iou"] == 0.5
    assert summary["wrong_object_rate"] == pytest.approx(2 / 3) and "wrong_object" not in summary
    assert summary["contact_accuracy"] == 0.5
    assert summary["sync_offset"] == 2.0
    assert summary["num_clips"] == 3.0
