import numpy as np
import pytest
from PIL import Image

from interactavatar.data.render import (
    BODY_LIMBS,
    FINGER_CLASS0,
    JOINT_CLASS0,
    LIMB_CLASS0,
    LIMB_COLORS,
    OPENPOSE_COLORS,
    PALETTE,
    classify_pixels,
    decode_frame,
    render_clip,
    render_frame,
    strokes_for,
)
from interactavatar.data.schema import read_manifest, read_meta


def _clips(root):
    return [read_meta(root / e.path) for e in read_manifest(root)]


def _rendered(meta, size):
    return render_clip(meta.body, meta.left_hand, meta.right_hand, meta.target_boxes(), size,
                       (meta.height, meta.width))


def _scale(points, meta, size):
    out = points.copy()
    out[..., :2] *= [size[1] / meta.width, size[0] / meta.height]
    return out


def _edge_hidden(frame, box):
    """Whether a limb covers a whole edge of the box, where no decoder can see it."""
    x0, y0, x1, y1 = np.ceil(box[:2]).astype(int).tolist() + np.floor(box[2:]).astype(int).tolist()
    white = (frame == 255).all(-1)[y0: y1 + 1, x0: x1 + 1]
    return not (white[0].any() and white[-1].any() and white[:, 0].any() and white[:, -1].any())


def test_palette_classes_are_far_apart():
    distance = np.sqrt(((PALETTE[:, None].astype(int) - PALETTE[None].astype(int)) ** 2).sum(-1))
    np.fill_diagonal(distance, 999)
    assert distance.min() >= 50, "classes must survive mild compression noise"
    np.testing.assert_array_equal(LIMB_COLORS[0], [153, 0, 0])  # OpenPose's 0.6 dimming
    assert len(BODY_LIMBS) == 17


def test_format_black_background_white_box_under_limbs():
    body = np.zeros((18, 3))
    body[1] = [32, 10, 1]   # neck
    body[8] = [32, 60, 1]   # right hip: the neck-hip limb crosses the box
    hands = np.zeros((21, 3))
    frame = render_frame(body, hands, hands, np.array([20.0, 30.0, 44.0, 50.0]), 64, 64)
    assert frame.dtype == np.uint8 and frame.shape == (64, 64, 3)
    np.testing.assert_array_equal(frame[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(frame[40, 22], [255, 255, 255])
    np.testing.assert_array_equal(frame[40, 32], LIMB_COLORS[BODY_LIMBS.index((1, 8))])
    np.testing.assert_array_equal(frame[10, 32], OPENPOSE_COLORS[1])


@pytest.mark.parametrize("size", [(256, 256), (256, 448)])
def test_round_trip_is_exact_at_pim_resolution(demo_dataset, size):
    for meta in _clips(demo_dataset):
        frames = _rendered(meta, size)
        for f in (0, meta.num_frames // 2, meta.num_frames - 1):
            decoded = decode_frame(frames[f])
            truth_box = meta.target_boxes()[f] * np.tile([size[1] / meta.width, size[0] / meta.height], 2)
            assert np.abs(decoded.box - truth_box).max() <= 1.0 or _edge_hidden(frames[f], truth_box)
            assert np.abs(decoded.box - truth_box).max() <= 2 * strokes_for(*size).limb_halfwidth + 1
            # Fingertips are read from a stroke's far end, so hands get half a pixel more.
            for truth, got, tolerance in ((meta.body[f], decoded.body, 1.0),
                                          (meta.left_hand[f], decoded.left_hand, 1.5),
                                          (meta.right_hand[f], decoded.right_hand, 1.5)):
                truth = _scale(truth, meta, size)
                visible = truth[:, 2] > 0
                np.testing.assert_array_equal(got[:, 2] > 0, visible)
                assert np.abs(got[visible, :2] - truth[visible, :2]).max() <= tolerance


def test_body_round_trip_at_demo_motion_size(demo_dataset):
    size = (64, 64)
    for meta in _clips(demo_dataset):
        frames = _rendered(meta, size)
        for f in range(meta.num_frames):
            decoded = decode_frame(frames[f])
            truth = _scale(meta.body[f], meta, size)
            found = decoded.body[:, 2] > 0
            assert np.all(truth[found, 2] > 0)
            assert np.abs(decoded.body[found, :2] - truth[found, :2]).max() <= 1.0
            assert found.sum() >= 12, "nearly all joints stay visible at 64x64"
            box = meta.target_boxes()[f] * np.tile([size[1] / meta.width, size[0] / meta.height], 2)
            # A limb drawn over a box edge hides it: the error is at most a limb's width.
            assert np.abs(decoded.box - box).max() <= 3.0


def test_limb_classes_survive_at_64_and_after_downscaling(demo_dataset):
    meta = _clips(demo_dataset)[0]
    drawn = {LIMB_CLASS0 + i for i, (a, b) in enumerate(BODY_LIMBS) if meta.body[0, a, 2] > 0 and meta.body[0, b, 2] > 0}
    native = classify_pixels(_rendered(meta, (64, 64))[0])
    assert drawn <= set(np.unique(native).tolist())
    assert {JOINT_CLASS0 + 1, FINGER_CLASS0} <= set(np.unique(native).tolist())
    big = _rendered(meta, (128, 128))[0]
    halved = np.asarray(Image.fromarray(big).resize((64, 64), Image.BILINEAR))
    survived = drawn & set(np.unique(classify_pixels(halved)).tolist())
    assert len(survived) >= len(drawn) - 2


def test_decoding_tolerates_noise(demo_dataset):
    meta = _clips(demo_dataset)[1]
    clean = _rendered(meta, (256, 256))[8]
    noisy = np.clip(clean.astype(int) + np.random.default_rng(0).integers(-12, 13, clean.shape), 0, 255)
    a, b = decode_frame(clean), decode_frame(noisy.astype(np.uint8))
    np.testing.assert_allclose(a.box, b.box, atol=1)
    np.testing.assert_allclose(a.body, b.body, atol=1)


def test_empty_frame_decodes_to_nothing():
    decoded = decode_frame(np.zeros((64, 64, 3), np.uint8))
    assert decoded.box is None and not decoded.body[:, 2].any() and not decoded.right_hand[:, 2].any()
