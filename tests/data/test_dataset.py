import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from interactavatar.config import preset
from interactavatar.data.dataset import (
    CURRICULUM_TASKS,
    ClipDataset,
    curriculum_sample,
    curriculum_task,
    face_mask,
)
from interactavatar.data.render import decode_frame
from interactavatar.data.schema import read_meta
from interactavatar.data.synth import SynthSpec, synthesize


def _uint8(frames: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8."""
    return ((frames.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


def test_item_shapes_for_demo_preset(demo_dataset):
    config = preset("demo")
    dataset = ClipDataset(demo_dataset, config, split="train")
    assert len(dataset) == 2
    item = dataset[0]
    shapes = {key: tuple(value.shape) for key, value in item.items() if isinstance(value, torch.Tensor)}
    assert shapes == {
        "video": (3, 17, 128, 128), "motion": (3, 17, 64, 64), "reference": (3, 1, 128, 128),
        "motion_reference": (3, 1, 64, 64), "audio": (10880,),
        "face_mask": (5, 16, 16), "body": (17, 18, 3), "left_hand": (17, 21, 3), "right_hand": (17, 21, 3),
        "target_box": (17, 4),
    }
    for key in ("video", "motion", "reference", "motion_reference"):
        assert item[key].dtype == torch.float32 and item[key].min() >= -1 and item[key].max() <= 1
    assert all(value.is_contiguous() for value in item.values() if isinstance(value, torch.Tensor))
    torch.testing.assert_close(item["reference"], item["video"][:, :1])
    assert isinstance(item["text"], str) and item["text"] and item["clip_id"] == "synth7-000000"


def test_motion_agrees_with_video_and_meta(demo_dataset):
    dataset = ClipDataset(demo_dataset, preset("demo"), split=None)
    for index in range(len(dataset)):
        item = dataset[index]
        meta = read_meta(demo_dataset / dataset.entries[index].path)
        motion = _uint8(item["motion"])
        for f in (0, 16):
            decoded = decode_frame(motion[f])
            np.testing.assert_allclose(decoded.box, meta.target_boxes()[f] / 2, atol=3)
            visible = decoded.body[:, 2] > 0
            np.testing.assert_allclose(decoded.body[visible, :2], meta.body[f, visible, :2] / 2, atol=1)
        # The target object sits inside its box in the video: its colour is there.
        x0, y0, x1, y1 = item["target_box"][0].round().int().tolist()
        patch = _uint8(item["video"][:, :1])[0, y0:y1 + 1, x0:x1 + 1].reshape(-1, 3).astype(int)
        saturation = patch.max(1) - patch.min(1)
        assert (saturation > 120).mean() > 0.3


def test_tiny_preset_resamples_space_time_and_keypoints_together(demo_dataset):
    config = preset("tiny")  # 64x64 video, 32x32 motion, 5 frames
    item = ClipDataset(demo_dataset, config, split="val")[0]
    meta = read_meta(demo_dataset / "synth7-000001")
    assert item["video"].shape == (3, 5, 64, 64) and item["motion"].shape == (3, 5, 32, 32)
    np.testing.assert_allclose(item["body"][..., :2].numpy(), meta.body[:5, :, :2] / 2, atol=1e-3)
    assert item["audio"].shape == (5 * 640,) and item["face_mask"].shape == (2, 8, 8)


def test_other_rates_and_aspects_are_resampled(tmp_path):
    root = tmp_path / "wide"
    synthesize(root, num_clips=1, seed=1, spec=SynthSpec(width=192, height=128, num_frames=33, fps=50.0))
    meta = read_meta(root / "synth1-000000")
    item = ClipDataset(root, preset("demo"), split=None)[0]
    expected = meta.body[::2][:17].copy()
    expected[..., 0] -= 32  # centre crop 192 -> 128 wide
    visible = expected[..., 2] > 0
    np.testing.assert_allclose(item["body"].numpy()[visible], expected[visible], atol=1e-3)
    assert item["video"].shape == (3, 17, 128, 128)
    # 17 frames at 25 fps = 0.68 s of the 0.66 s clip: the audio is zero-padded at the end.
    assert item["audio"].shape == (10880,) and item["audio"][-200:].abs().max() == 0


def test_short_clip_holds_last_frame(tmp_path):
    root = tmp_path / "short"
    synthesize(root, num_clips=1, seed=2, spec=SynthSpec(num_frames=9))
    item = ClipDataset(root, preset("demo"), split=None)[0]
    torch.testing.assert_close(item["video"][:, 9:], item["video"][:, 8:9].expand(-1, 8, -1, -1))
    assert item["audio"][9 * 640:].abs().max() == 0 and item["audio"][: 9 * 640].abs().max() > 0


def test_face_mask_marks_the_face_cells():
    config = preset("demo")
    face = np.tile([[40.0, 8.0, 63.0, 31.0]], (17, 1))
    face[9:] += [16, 0, 16, 0]  # moves right from frame 9 (latent frame 3 covers 9..12)
    mask = face_mask(face, config)
    assert mask.shape == (5, 16, 16)
    assert mask[0, 1:4, 5:8].eq(1).all() and mask[0].sum() == 9
    assert mask[3, 1:4, 7:10].eq(1).all() and mask[3].sum() == 9
    assert face_mask(np.zeros((17, 4)), config).sum() == 0


def test_curriculum_samples(demo_dataset):
    item = ClipDataset(demo_dataset, preset("demo"), split="train")[0]
    detection = curriculum_sample(item, "detection")
    assert detection["motion"].shape == (3, 1, 64, 64) and detection["clean_latent_frames"] == 0
    torch.testing.assert_close(detection["motion"], item["motion"][:, :1])
    assert curriculum_sample(item, "continuation")["clean_latent_frames"] == 1
    generation = curriculum_sample(item, "generation")
    assert generation["motion"].shape == (3, 17, 64, 64) and generation["clean_latent_frames"] == 0
    assert [curriculum_task(step) for step in range(4)] == [*CURRICULUM_TASKS, "detection"]
    with pytest.raises(ValueError, match="curriculum"):
        curriculum_sample(item, "dance")


def test_batches_collate_and_random_start(demo_dataset):
    dataset = ClipDataset(demo_dataset, preset("tiny"), split="train", start="random")
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["video"].shape == (2, 3, 5, 64, 64) and len(batch["text"]) == 2


def test_bad_arguments(demo_dataset):
    with pytest.raises(ValueError, match="no clips in split 'holdout'"):
        ClipDataset(demo_dataset, preset("demo"), split="holdout")
    with pytest.raises(ValueError, match="start="):
        ClipDataset(demo_dataset, preset("demo"), start="middle")
    with pytest.raises(FileNotFoundError):
        ClipDataset(demo_dataset / "nope", dataclasses.replace(preset("demo")))
