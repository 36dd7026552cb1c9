import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from interactavatar.config import preset
from interactavatar.data.dataset import (
    CURRICULUM_TASKS,
    ClipDataset,
    Crop,
    curriculum_sample,
    curriculum_task,
    face_mask,
)
from interactavatar.data.render import decode_frame
from interactavatar.data.schema import read_meta, write_meta
from interactavatar.data.synth import SynthSpec, synthesize
from interactavatar.io.media import crop_box, fit_on_white, read_video


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
        "video": (3, 17, 176, 176), "motion": (3, 17, 64, 64), "object_image": (3, 176, 176),
        "motion_reference": (3, 1, 64, 64), "audio": (10880,),
        "face_mask": (5, 22, 22), "body": (17, 18, 3), "left_hand": (17, 21, 3), "right_hand": (17, 21, 3),
        "target_box": (17, 4),
    }
    for key in ("video", "motion", "object_image", "motion_reference"):
        assert item[key].dtype == torch.float32 and item[key].min() >= -1 and item[key].max() <= 1
    assert all(value.is_contiguous() for value in item.values() if isinstance(value, torch.Tensor))
    assert isinstance(item["text"], str) and item["text"] and item["clip_id"] == "synth7-000000"


def test_motion_agrees_with_video_and_meta(demo_dataset):
    dataset = ClipDataset(demo_dataset, preset("demo"), split=None)
    scale = 64 / 176  # the 64x64 motion of the 176x176 video
    for index in range(len(dataset)):
        item = dataset[index]
        meta = read_meta(demo_dataset / dataset.entries[index].path)
        motion = _uint8(item["motion"])
        for f in (0, 16):
            decoded = decode_frame(motion[f])
            np.testing.assert_allclose(decoded.box, meta.target_boxes()[f] * scale, atol=3)
            visible = decoded.body[:, 2] > 0
            np.testing.assert_allclose(decoded.body[visible, :2], meta.body[f, visible, :2] * scale, atol=1)
        # The target object sits inside its box in the video: its colour is there.
        x0, y0, x1, y1 = item["target_box"][0].round().int().tolist()
        patch = _uint8(item["video"][:, :1])[0, y0:y1 + 1, x0:x1 + 1].reshape(-1, 3).astype(int)
        saturation = patch.max(1) - patch.min(1)
        assert (saturation > 120).mean() > 0.3


def test_tiny_preset_resamples_space_time_and_keypoints_together(demo_dataset):
    config = preset("tiny")  # 88x88 video, 32x32 motion, 5 frames
    item = ClipDataset(demo_dataset, config, split="val")[0]
    meta = read_meta(demo_dataset / "synth7-000001")
    assert item["video"].shape == (3, 5, 88, 88) and item["motion"].shape == (3, 5, 32, 32)
    np.testing.assert_allclose(item["body"][..., :2].numpy(), meta.body[:5, :, :2] / 2, atol=1e-3)
    assert item["audio"].shape == (5 * 640,) and item["face_mask"].shape == (2, 11, 11)


def test_other_rates_and_aspects_are_resampled(tmp_path):
    root = tmp_path / "wide"
    synthesize(root, num_clips=1, seed=1, spec=SynthSpec(width=264, height=176, num_frames=33, fps=50.0))
    meta = read_meta(root / "synth1-000000")
    item = ClipDataset(root, preset("demo"), split=None)[0]
    expected = meta.body[::2][:17].copy()
    expected[..., 0] -= 44  # centre crop 264 -> 176 wide
    visible = expected[..., 2] > 0
    np.testing.assert_allclose(item["body"].numpy()[visible], expected[visible], atol=1e-3)
    assert item["video"].shape == (3, 17, 176, 176)
    # 17 frames at 25 fps = 0.68 s of the 0.66 s clip: the audio is zero-padded at the end.
    assert item["audio"].shape == (10880,) and item["audio"][-200:].abs().max() == 0


def test_short_clip_holds_last_frame(tmp_path):
    root = tmp_path / "short"
    synthesize(root, num_clips=1, seed=2, spec=SynthSpec(num_frames=9))
    item = ClipDataset(root, preset("demo"), split=None)[0]
    torch.testing.assert_close(item["video"][:, 9:], item["video"][:, 8:9].expand(-1, 8, -1, -1))
    assert item["audio"][9 * 640:].abs().max() == 0 and item["audio"][: 9 * 640].abs().max() > 0


def _check_object_image(object_image: torch.Tensor, frame: np.ndarray, box: np.ndarray) -> None:
    """object_image [3, H, W] is frame [h, w, 3] cropped by box (its pixels) and fitted inside H x W
    keeping its aspect, centred on white."""
    size = tuple(object_image.shape[1:])
    x0, y0, x1, y1 = np.floor(box).astype(int)
    patch = frame[y0:y1 + 1, x0:x1 + 1]
    height, width = patch.shape[:2]
    scale = min(size[0] / height, size[1] / width)
    fitted = (int(height * scale + 1e-9), int(width * scale + 1e-9))
    top, left = (size[0] - fitted[0]) // 2, (size[1] - fitted[1]) // 2
    image = _uint8(object_image[:, None])[0]
    inside = np.zeros(size, bool)
    inside[top:top + fitted[0], left:left + fitted[1]] = True
    assert (image[~inside] == 255).all() and (~inside).any()
    # The pasted content, brought back to the patch's size (an independent resize), is the patch:
    # a few levels of resampling difference (2 to 3.5 here), where the patch one pixel off in any
    # direction differs by 4.8 to 14.
    content = image[top:top + fitted[0], left:left + fitted[1]]
    back = F.interpolate(torch.from_numpy(content.copy()).permute(2, 0, 1)[None].float(), size=(height, width),
                         mode="area")[0].permute(1, 2, 0).numpy()
    assert np.abs(back - patch).mean() < 4.25
    assert np.abs(back - 255).mean() > 40  # a coloured object, not a white square


def test_object_image_is_the_target_fitted_on_white(tmp_path, demo_dataset):
    root = tmp_path / "wide"  # 264x176 source: the dataset crops 44 px off each side, no resize
    synthesize(root, num_clips=2, seed=1, spec=SynthSpec(width=264, height=176, num_frames=33, fps=50.0))
    for index in range(2):
        item = ClipDataset(root, preset("demo"), split=None)[index]
        # The box as the model sees it, in the video's first frame.
        _check_object_image(item["object_image"], _uint8(item["video"][:, :1])[0], item["target_box"][0].numpy())
    # A 176 px source at the tiny preset's 88 px: the object is cropped at the source's resolution.
    dataset = ClipDataset(demo_dataset, preset("tiny"), split="train")
    meta = read_meta(demo_dataset / dataset.entries[0].path)
    source, _ = read_video(demo_dataset / dataset.entries[0].path / meta.video)
    _check_object_image(dataset[0]["object_image"], source[0], meta.target_boxes()[0])


def test_a_clip_without_a_target_gets_a_white_object_image(tmp_path):
    root = tmp_path / "no-target"
    synthesize(root, num_clips=1, seed=4, spec=SynthSpec(num_frames=9))
    meta = read_meta(root / "synth4-000000")
    for frame in meta.objects:
        for box in frame:
            box.target = False
    write_meta(root / "synth4-000000", meta)
    item = ClipDataset(root, preset("tiny"), split=None)[0]
    assert item["object_image"].shape == (3, 88, 88) and item["object_image"].eq(1).all()
    assert item["target_box"].isnan().all()


def test_object_box_is_cut_to_what_the_crop_keeps():
    crop = Crop.centre((128, 192), (64, 64))  # keeps source columns 32..159
    assert crop.window() == (32, 0, 160, 128)
    np.testing.assert_array_equal(crop.source_box(np.array([10.0, 5, 50, 20])), [32, 5, 50, 20])
    assert np.isnan(crop.source_box(np.array([0.0, 5, 20, 20]))).all()  # wholly cropped away
    assert np.isnan(crop.source_box(np.full(4, np.nan))).all()


def test_fit_on_white_keeps_the_aspect_centred_and_is_idempotent():
    image = np.zeros((10, 40, 3), np.uint8)
    fitted = fit_on_white(image, (64, 32))
    assert fitted.shape == (64, 32, 3)
    assert (fitted[28:36] == 0).all() and (fitted[:28] == 255).all() and (fitted[36:] == 255).all()
    rng = np.random.default_rng(0)
    at_size = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_on_white(at_size, (64, 32)), at_size)
    np.testing.assert_array_equal(fit_on_white(fit_on_white(image, (64, 32)), (64, 32)), fitted)
    assert (fit_on_white(None, (8, 16)) == 255).all() and fit_on_white(None, (8, 16)).shape == (8, 16, 3)
    transparent = np.zeros((8, 8, 4), np.uint8)  # RGBA: transparent pixels become white
    transparent[:4, :, 3] = 255
    rgba = fit_on_white(transparent, (8, 8))
    assert (rgba[:4] == 0).all() and (rgba[4:] == 255).all()
    assert crop_box(at_size, (2.5, 3.2, 5.9, 3.0)).shape == (1, 4, 3)
    assert crop_box(at_size, (40.0, 0, 50, 10)) is None and crop_box(at_size, None) is None


def test_face_mask_marks_the_face_cells():
    config = preset("demo")
    face = np.tile([[40.0, 8.0, 63.0, 31.0]], (17, 1))
    face[9:] += [16, 0, 16, 0]  # moves right from frame 9 (latent frame 3 covers 9..12)
    mask = face_mask(face, config)
    assert mask.shape == (5, 22, 22)
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
    assert batch["video"].shape == (2, 3, 5, 88, 88) and len(batch["text"]) == 2


def test_bad_arguments(demo_dataset):
    with pytest.raises(ValueError, match="no clips in split 'holdout'"):
        ClipDataset(demo_dataset, preset("demo"), split="holdout")
    with pytest.raises(ValueError, match="start="):
        ClipDataset(demo_dataset, preset("demo"), start="middle")
    with pytest.raises(FileNotFoundError):
        ClipDataset(demo_dataset / "nope", dataclasses.replace(preset("demo")))
