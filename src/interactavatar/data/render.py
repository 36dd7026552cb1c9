"""The motion video format: keypoints + target box -> RGB frame, and back.

This module is the single definition of what PIM draws and what evaluation reads back. A frame is
drawn on black, in this order (later pixels overwrite earlier ones):

1. the interacted object: one filled white (255, 255, 255) axis-aligned rectangle;
2. 17 OpenPose body limbs: ellipses along each limb, in the OpenPose colour list dimmed to 0.6
   (as DWPose/ControlNet draw them), semi-minor axis `limb_halfwidth`;
3. 18 body joints: discs of radius `joint_radius` in the full OpenPose colours;
4. both hands: 20 bones each, one pastel colour per finger (thumb..little), half-width
   `hand_halfwidth`. DWPose colours each hand bone with its own saturated hue; those collide with
   the body's 18 hues, so a finger could not be told from a joint after compression. Pastels
   (HSV saturation 0.5) sit at least ~75 levels away from every other class in some channel.

Sizes scale with the frame's short side S (S/64 for limbs and joints, S/256 for hands) with a
floor of one pixel of half-width, so that at 64x64 (the demo motion size) a limb is 3 px wide and
every colour class still decodes. Render at the target size rather than downscaling a larger
render: downscaling blends thin hand lines with black.

Decoding (`decode_frame`) classifies pixels to the nearest palette colour (tolerant, for generated
frames) and inverts each primitive: the box is the white pixels' extent; a joint is the centre whose
disc explains its visible pixels, the missing ones being covered by primitives drawn later; a
fingertip is the finger's farthest pixel from the wrist; the inner finger joints sit at
FINGER_JOINT_FRACTIONS along the wrist->tip ray, which is exact for straight fingers (the synthetic
avatar's) and approximate for bent ones. Tested on rendered ground truth: at 256 px body joints and
the box within 1 px, hand points within 1.5 px; at 64x64 body joints within 1 px. A limb lying
along a whole box edge hides it from any decoder: the box is then off by up to a limb's width.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from interactavatar.data.schema import BODY_KEYPOINTS, FINGERS

# OpenPose's body colour list (RGB), one per keypoint and per limb.
OPENPOSE_COLORS = np.array([
    [255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0],
    [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255],
    [0, 0, 255], [85, 0, 255], [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85],
], dtype=np.uint8)
# The 17 limbs OpenPose draws (its limbSeq without the two ear-shoulder links), 0-based.
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
LIMB_COLORS = (OPENPOSE_COLORS[: len(BODY_LIMBS)].astype(np.float64) * 0.6).astype(np.uint8)
HAND_BONES = tuple((0 if j == 0 else 1 + 4 * f + j - 1, 1 + 4 * f + j) for f in range(5) for j in range(4))
FINGER_COLORS = np.array(
    [[round(255 * c) for c in colorsys.hsv_to_rgb(f / len(FINGERS), 0.5, 1.0)] for f in range(len(FINGERS))],
    dtype=np.uint8,
)
# Where the 4 points of a straight finger lie along wrist->tip (knuckle, two finger joints, tip).
FINGER_JOINT_FRACTIONS = (0.45, 0.7, 0.86, 1.0)
WHITE = np.array([255, 255, 255], dtype=np.uint8)

# Pixel classes, in palette order: 0 black, 1 box, then limbs, joints, fingers.
BOX_CLASS = 1
LIMB_CLASS0 = 2
JOINT_CLASS0 = LIMB_CLASS0 + len(BODY_LIMBS)
FINGER_CLASS0 = JOINT_CLASS0 + len(BODY_KEYPOINTS)
PALETTE = np.concatenate([np.zeros((1, 3), np.uint8), WHITE[None], LIMB_COLORS, OPENPOSE_COLORS, FINGER_COLORS])


@dataclass(frozen=True)
class Strokes:
    """Primitive sizes in pixels for a frame; see `strokes_for`."""

    limb_halfwidth: float
    joint_radius: float
    hand_halfwidth: float


def strokes_for(height: int, width: int) -> Strokes:
    short = min(height, width)
    return Strokes(limb_halfwidth=max(1.0, short / 64), joint_radius=max(1.0, short / 64),
                   hand_halfwidth=max(0.5, short / 256))


@dataclass
class DecodedFrame:
    """What a motion frame says: box (x0, y0, x1, y1) or None, body [18, 3], hands [21, 3] each."""

    box: np.ndarray | None
    body: np.ndarray
    left_hand: np.ndarray
    right_hand: np.ndarray


def render_frame(body: np.ndarray, left_hand: np.ndarray, right_hand: np.ndarray,
                 box: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """Draw one motion frame. body: [18, 3], hands: [21, 3] (x, y, conf) in this frame's pixels;
    box: [4] or None (or NaN). Points with conf <= 0 and their limbs are not drawn.
    Returns uint8 [height, width, 3]."""
    canvas = np.zeros((height, width, 3), np.uint8)
    strokes = strokes_for(height, width)
    if box is not None and np.all(np.isfinite(box)):
        x0, y0, x1, y1 = box
        ys, xs = _grid(canvas, y0, y1, x0, x1)
        canvas[ys[:, None], xs[None, :]] = WHITE
    for (a, b), color in zip(BODY_LIMBS, LIMB_COLORS, strict=True):
        if body[a, 2] > 0 and body[b, 2] > 0:
            _paint(canvas, _ellipse_mask, color, body[a, :2], body[b, :2], strokes.limb_halfwidth)
    for point, color in zip(body, OPENPOSE_COLORS, strict=True):
        if point[2] > 0:
            _paint(canvas, _segment_mask, color, point[:2], point[:2], strokes.joint_radius)
    for hand in (right_hand, left_hand):
        for index, (a, b) in enumerate(HAND_BONES):
            if hand[a, 2] > 0 and hand[b, 2] > 0:
                _paint(canvas, _segment_mask, FINGER_COLORS[index // 4], hand[a, :2], hand[b, :2],
                       strokes.hand_halfwidth)
    return canvas


def render_clip(body: np.ndarray, left_hand: np.ndarray, right_hand: np.ndarray, boxes: np.ndarray,
                size: tuple[int, int], source_size: tuple[int, int]) -> np.ndarray:
    """Render a clip's motion video at size (H, W) from keypoints given at source_size (H, W).
    body: [F, 18, 3], hands: [F, 21, 3], boxes: [F, 4] (NaN rows: no target). Returns
    uint8 [F, H, W, 3]."""
    scale = np.array([size[1] / source_size[1], size[0] / source_size[0]])
    frames = []
    for f in range(body.shape[0]):
        frames.append(render_frame(_scaled(body[f], scale), _scaled(left_hand[f], scale),
                                   _scaled(right_hand[f], scale), boxes[f] * np.tile(scale, 2), *size))
    return np.stack(frames)


def classify_pixels(frame: np.ndarray, tolerance: float = 60.0) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] palette class; pixels farther than `tolerance` (RGB distance)
    from every palette colour count as background (0)."""
    pixels = frame.reshape(-1, 3).astype(np.int32)
    classes = np.zeros(len(pixels), np.int64)
    lit = np.flatnonzero(pixels.max(1) > tolerance)  # most of a motion frame is black
    distance = np.sqrt(((pixels[lit, None] - PALETTE[None].astype(np.int32)) ** 2).sum(-1))
    classes[lit] = np.where(distance.min(-1) > tolerance, 0, distance.argmin(-1))
    return classes.reshape(frame.shape[:2])


def decode_frame(frame: np.ndarray, tolerance: float = 60.0, min_box_pixels: int = 4) -> DecodedFrame:
    """Read box, body and hand keypoints back out of a motion frame [H, W, 3] uint8 (any size;
    sizes of the primitives follow `strokes_for`). Undecodable points come back as (0, 0, 0)."""
    height, width = frame.shape[:2]
    classes = classify_pixels(frame, tolerance)
    strokes = strokes_for(height, width)
    body = _decode_joints(classes, strokes.joint_radius)
    right_hand, left_hand = _decode_hands(classes, body, strokes.hand_halfwidth)
    return DecodedFrame(box=_decode_box(classes == BOX_CLASS, min_box_pixels), body=body,
                        left_hand=left_hand, right_hand=right_hand)


def _decode_box(mask: np.ndarray, min_pixels: int) -> np.ndarray | None:
    """Extent of the white pieces of at least `min_pixels`: limbs may cut the box into pieces, while
    stray near-white pixels (compression, highlights) are small and must not stretch it."""
    pieces, count = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(pieces.ravel(), minlength=count + 1)
    keep = np.flatnonzero(sizes >= min_pixels)
    keep = keep[keep > 0]
    if len(keep) == 0:
        return None
    ys, xs = np.nonzero(np.isin(pieces, keep))
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)


def _decode_joints(classes: np.ndarray, radius: float) -> np.ndarray:
    """Fit each joint's disc: among sub-pixel centres near its visible pixels, keep those whose
    disc covers every visible pixel and leaves the fewest of its other pixels unexplained (an
    unexplained pixel is neither visible nor under a stroke drawn later), and average them."""
    body = np.zeros((len(BODY_KEYPOINTS), 3))
    height, width = classes.shape
    pad = int(np.ceil(radius)) + 1
    step = 0.25
    for joint in range(len(BODY_KEYPOINTS)):
        ys, xs = _main_blob(classes == JOINT_CLASS0 + joint, reach=2 * radius + 1)
        if len(xs) == 0:
            continue
        y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad, height - 1)
        x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad, width - 1)
        window = classes[y0: y1 + 1, x0: x1 + 1]
        visible = (window == JOINT_CLASS0 + joint).ravel()
        # Later joint discs and hand bones may cover this disc; limbs and the box never do.
        hidden = (window > JOINT_CLASS0 + joint).ravel()
        py, px = np.mgrid[y0: y1 + 1, x0: x1 + 1]
        cx, cy = np.meshgrid(np.arange(xs.min() - radius, xs.max() + radius + step, step),
                             np.arange(ys.min() - radius, ys.max() + radius + step, step))
        inside = ((px.ravel()[None] - cx.ravel()[:, None]) ** 2
                  + (py.ravel()[None] - cy.ravel()[:, None]) ** 2) <= radius ** 2 + 1e-9
        unexplained = (visible[None] & ~inside).sum(1)
        missing = (inside & ~visible[None] & ~hidden[None]).sum(1)
        cost = unexplained * inside.shape[1] + missing
        best = cost == cost.min()
        seen = min(1.0, len(xs) / max(1.0, np.pi * radius ** 2))
        body[joint] = [cx.ravel()[best].mean(), cy.ravel()[best].mean(), seen]
    return body


def _main_blob(mask: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the largest connected piece of `mask` and of any piece within `reach` of its
    centre (a stroke drawn across a disc splits it); stray pixels elsewhere (noise, compression,
    a similar colour) are dropped."""
    pieces, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count <= 1:
        return np.nonzero(pieces)
    ys, xs = np.nonzero(pieces)
    labels = pieces[ys, xs]
    largest = np.bincount(labels).argmax()
    centre = np.array([xs[labels == largest].mean(), ys[labels == largest].mean()])
    near = np.hypot(xs - centre[0], ys - centre[1]) <= reach + 1
    keep = np.isin(labels, np.unique(labels[near]))
    return ys[keep], xs[keep]


def _decode_hands(classes: np.ndarray, body: np.ndarray, halfwidth: float) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) hands, each [21, 3]. Every finger stroke starts at its own wrist, so each
    connected piece of a finger's colour belongs to the wrist it comes nearest to; a hand is
    decoded only when its body wrist is."""
    wrists = np.stack([body[BODY_KEYPOINTS.index("right_wrist")], body[BODY_KEYPOINTS.index("left_wrist")]])
    hands = np.zeros((2, 21, 3))
    for finger in range(len(FINGERS)):
        pieces, count = ndimage.label(classes == FINGER_CLASS0 + finger, structure=np.ones((3, 3)))
        owners = np.full(count + 1, -1)
        ys, xs = np.nonzero(pieces)
        pixels = np.stack([xs, ys], 1).astype(np.float64)
        distance = np.linalg.norm(pixels[:, None] - wrists[None, :, :2], axis=-1)
        distance[:, wrists[:, 2] <= 0] = np.inf
        for piece in range(1, count + 1):
            nearest = distance[pieces[ys, xs] == piece].min(0)
            if np.isfinite(nearest.min()):
                owners[piece] = nearest.argmin()
        owner = owners[pieces[ys, xs]]
        for side in range(2):
            wrist = wrists[side]
            mine = owner == side
            if not mine.any():
                continue
            far = pixels[mine][distance[mine, side].argmax()]
            direction = far - wrist[:2]
            length = np.linalg.norm(direction)
            if length <= halfwidth:
                continue
            # The farthest pixel lies up to a half-width beyond the tip, along the finger.
            tip = wrist[:2] + direction * (length - halfwidth / 2) / length
            hands[side, 0] = wrist
            for joint, fraction in enumerate(FINGER_JOINT_FRACTIONS):
                hands[side, 1 + 4 * finger + joint] = [*(wrist[:2] + (tip - wrist[:2]) * fraction), 1.0]
    return hands[0], hands[1]


def _scaled(points: np.ndarray, scale: np.ndarray) -> np.ndarray:
    out = points.copy()
    out[..., :2] = points[..., :2] * scale
    return out


def _grid(canvas: np.ndarray, y0: float, y1: float, x0: float, x1: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel rows/columns whose centres lie in [y0, y1] x [x0, x1], clipped to the canvas."""
    height, width = canvas.shape[:2]
    ys = np.arange(max(0, int(np.ceil(y0))), min(height - 1, int(np.floor(y1))) + 1)
    xs = np.arange(max(0, int(np.ceil(x0))), min(width - 1, int(np.floor(x1))) + 1)
    return ys, xs


def _paint(canvas: np.ndarray, shape, color: np.ndarray, a: np.ndarray, b: np.ndarray, halfwidth: float) -> None:
    reach = halfwidth + 1
    ys, xs = _grid(canvas, min(a[1], b[1]) - reach, max(a[1], b[1]) + reach,
                   min(a[0], b[0]) - reach, max(a[0], b[0]) + reach)
    if len(ys) == 0 or len(xs) == 0:
        return
    mask = shape(xs.astype(np.float64)[None, :], ys.astype(np.float64)[:, None], a, b, halfwidth)
    canvas[ys[0]: ys[-1] + 1, xs[0]: xs[-1] + 1][mask] = color


def _segment_mask(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray, halfwidth: float) -> np.ndarray:
    """Pixels within `halfwidth` of segment a-b (a disc when a == b)."""
    d = b - a
    length2 = float(d @ d)
    t = 0.0 if length2 == 0 else np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / length2, 0, 1)
    return (px - a[0] - t * d[0]) ** 2 + (py - a[1] - t * d[1]) ** 2 <= halfwidth ** 2 + 1e-9


def _ellipse_mask(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray, halfwidth: float) -> np.ndarray:
    """OpenPose's limb: an ellipse from a to b with semi-minor axis `halfwidth`."""
    centre = (a + b) / 2
    d = b - a
    half_length = max(np.linalg.norm(d) / 2, halfwidth)
    u = d / (2 * half_length) if np.linalg.norm(d) > 0 else np.array([1.0, 0.0])
    along = (px - centre[0]) * u[0] + (py - centre[1]) * u[1]
    across = -(px - centre[0]) * u[1] + (py - centre[1]) * u[0]
    return (along / half_length) ** 2 + (across / halfwidth) ** 2 <= 1 + 1e-9
