"""The ground truth's object image, and what the evaluation hands the pipeline for each clip."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from interactavatar.config import preset
from interactavatar.data.schema import read_meta, write_meta
from interactavatar.evaluate.run import EvaluationSettings, _score_pipeline
from interactavatar.evaluate.truth import load_truth, object_crop


def test_object_image_is_the_target_cut_from_the_first_frame(truths, eval_dataset: Path):
    for truth in truths:
        meta = read_meta(eval_dataset / truth.clip_id)
        x0, y0, x1, y1 = np.floor(meta.target_boxes()[0]).astype(int)
        np.testing.assert_array_equal(truth.object_image, truth.image[y0:y1 + 1, x0:x1 + 1])
        assert truth.object_image.size and truth.object_image.flags.owndata  # a copy, not a view of the image


def test_object_crop_keeps_what_the_video_keeps():
    image = np.arange(128 * 192 * 3, dtype=np.uint32).reshape(128, 192, 3).astype(np.uint8)
    # A square video keeps the 192x128 image's columns 32..159: the box is cut to them.
    np.testing.assert_array_equal(object_crop(image, np.array([10.0, 5, 50, 20]), (64, 64)), image[5:21, 32:51])
    assert object_crop(image, np.array([0.0, 5, 20, 20]), (64, 64)) is None
    assert object_crop(image, np.full(4, np.nan), (64, 64)) is None


def test_a_clip_without_a_target_has_no_object_image(eval_dataset: Path, tmp_path: Path):
    clip = tmp_path / "clip"
    shutil.copytree(eval_dataset / "synth0-000002", clip)
    meta = read_meta(clip)
    for frame in meta.objects:
        for box in frame:
            box.target = False
    write_meta(clip, meta)
    assert load_truth(clip, preset("tiny")).object_image is None


def test_the_pipeline_gets_the_object_image_and_no_pose_image(truths, tmp_path: Path):
    calls = []

    def pipeline(image, text, speech, **kwargs):
        calls.append(kwargs)
        truth = next(t for t in truths if t.text == text)
        return SimpleNamespace(video=truth.video, motion=truth.motion)

    settings = EvaluationSettings(model_dir=tmp_path, data_dir=tmp_path, out_dir=tmp_path, steps=1)
    _score_pipeline("model", pipeline, truths[:2], settings, {}, [])
    assert [call["object_image"] for call in calls] == [t.object_image for t in truths[:2]]
    assert all(call.get("pose_image") is None and call.get("pose_video") is None for call in calls)
