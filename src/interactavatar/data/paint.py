"""Paint the synthetic world's RGB video frames (PIL) from a scene and its ground-truth tracks.

Draw order is depth order: background, avatar (hair, torso, head), table (hides the hips),
objects, arms and hands (in front: they reach over the table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from interactavatar.data.render import HAND_BONES
from interactavatar.data.schema import BODY_KEYPOINTS

if TYPE_CHECKING:
    from interactavatar.data.synth import Scene, SynthSpec, Tracks

AT = {name: i for i, name in enumerate(BODY_KEYPOINTS)}


def paint_clip(scene: Scene, tracks: Tracks, spec: SynthSpec, rng: np.random.Generator) -> np.ndarray:
    """-> uint8 [F, H, W, 3]."""
    background = _background(scene, spec, rng)
    return np.stack([_paint_frame(scene, tracks, f, spec, background) for f in range(spec.num_frames)])


def _background(scene: Scene, spec: SynthSpec, rng: np.random.Generator) -> Image.Image:
    h, w = spec.height, spec.width
    base = np.array(scene.background, dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    period = max(4, min(w, h) // 8)
    shade = {
        "plain": np.zeros((h, w)),
        "stripes": ((xx // period) % 2) * 14.0,
        "checker": (((xx // period) + (yy // period)) % 2) * 12.0,
        "noise": rng.normal(0.0, 6.0, (h, w)),
    }[scene.texture]
    pixels = np.clip(base[None, None] - shade[..., None], 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0.58 * h, w, 0.6 * h], fill=tuple(int(c * 0.85) for c in scene.background))
    return image


def _paint_frame(scene: Scene, tracks: Tracks, f: int, spec: SynthSpec, background: Image.Image) -> np.ndarray:
    w, h = spec.width, spec.height
    short = min(w, h)
    image = background.copy()
    draw = ImageDraw.Draw(image)
    body = tracks.body[f, :, :2]
    x0, y0, x1, y1 = tracks.face[f]
    radius = (x1 - x0) / 2
    head = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    if scene.subject == "woman":  # long hair behind the head, down to the shoulders
        draw.rounded_rectangle([x0 - 0.15 * radius, y0 - 0.1 * radius, x1 + 0.15 * radius, y1 + 0.9 * radius],
                               radius=radius, fill=scene.hair)
    shoulders = (body[AT["right_shoulder"]], body[AT["left_shoulder"]])
    hips = (body[AT["right_hip"]], body[AT["left_hip"]])
    torso = [tuple(shoulders[0]), tuple(shoulders[1]), tuple(hips[1] + [0.04 * short, 0]),
             tuple(hips[0] - [0.04 * short, 0])]
    draw.polygon(torso, fill=scene.shirt)
    _line(draw, body[AT["neck"]], head, scene.skin, 0.07 * short)
    draw.ellipse([x0, y0, x1, y1], fill=scene.skin)
    if scene.subject == "man":  # short hair: a cap over the top of the head
        draw.chord([x0, y0 - 0.05 * radius, x1, y1], 180, 360, fill=scene.hair)
    else:
        draw.chord([x0, y0 - 0.1 * radius, x1, y1 - 0.4 * radius], 180, 360, fill=scene.hair)
    for eye in ("right_eye", "left_eye"):
        ex, ey = body[AT[eye]]
        draw.ellipse([ex - 0.12 * radius, ey - 0.12 * radius, ex + 0.12 * radius, ey + 0.12 * radius],
                     fill=(30, 25, 25))
    mouth_open = 0.06 + 0.34 * float(tracks.mouth[f])
    mouth_y = head[1] + 0.5 * radius
    draw.ellipse([head[0] - 0.3 * radius, mouth_y - mouth_open * radius / 2,
                  head[0] + 0.3 * radius, mouth_y + mouth_open * radius / 2], fill=(120, 20, 30))
    draw.rectangle([0, 0.62 * h, w, h], fill=scene.table)
    draw.rectangle([0, 0.62 * h, w, 0.64 * h], fill=tuple(int(c * 0.8) for c in scene.table))
    order = np.argsort(tracks.boxes[f, :, 3], kind="stable")
    for index in order:
        _paint_object(draw, scene.objects[index].category, scene.objects[index].rgb, tracks.boxes[f, index])
    for side in ("right", "left"):
        shoulder, elbow, wrist = (body[AT[f"{side}_{j}"]] for j in ("shoulder", "elbow", "wrist"))
        _line(draw, shoulder, elbow, scene.shirt, 0.075 * short)
        _line(draw, elbow, wrist, scene.skin, 0.055 * short)
        hand = tracks.right_hand[f] if side == "right" else tracks.left_hand[f]
        palm = 0.028 * short
        draw.ellipse([wrist[0] - palm, wrist[1] - palm, wrist[0] + palm, wrist[1] + palm], fill=scene.skin)
        for a, b in HAND_BONES:
            _line(draw, hand[a, :2], hand[b, :2], scene.skin, 0.02 * short)
    return np.asarray(image)


def _paint_object(draw: ImageDraw.ImageDraw, category: str, color: tuple[int, int, int], box: np.ndarray) -> None:
    dark = tuple(int(c * 0.6) for c in color)
    light = tuple(int(c + (255 - c) * 0.5) for c in color)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if category == "cup":
        draw.polygon([(x0, y0), (x1 - 0.25 * w, y0), (x1 - 0.32 * w, y1), (x0 + 0.07 * w, y1)], fill=color)
        draw.arc([x1 - 0.45 * w, y0 + 0.2 * h, x1, y0 + 0.7 * h], 270, 90, fill=color, width=max(1, int(0.1 * w)))
        draw.line([(x0, y0), (x1 - 0.25 * w, y0)], fill=dark, width=max(1, int(0.08 * h)))
    elif category == "box":
        draw.rectangle([x0, y0, x1, y1], fill=color)
        draw.rectangle([x0, y0, x1, y0 + 0.25 * h], fill=light)
    elif category == "ball":
        draw.ellipse([x0, y0, x1, y1], fill=color)
        draw.ellipse([x0 + 0.2 * w, y0 + 0.2 * h, x0 + 0.45 * w, y0 + 0.45 * h], fill=light)
    elif category == "book":
        draw.rectangle([x0, y0, x1, y1], fill=color)
        draw.rectangle([x0 + 0.08 * w, y0 + 0.55 * h, x1, y1 - 0.1 * h], fill=(245, 240, 225))
        draw.rectangle([x0, y0, x0 + 0.08 * w, y1], fill=dark)
    elif category == "bottle":
        draw.rectangle([x0, y0 + 0.35 * h, x1, y1], fill=color)
        draw.rectangle([x0 + 0.3 * w, y0 + 0.08 * h, x1 - 0.3 * w, y0 + 0.35 * h], fill=color)
        draw.rectangle([x0 + 0.25 * w, y0, x1 - 0.25 * w, y0 + 0.1 * h], fill=dark)
    else:
        raise ValueError(f"synth: unknown object category {category!r}")


def _line(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, color: tuple[int, int, int], width: float) -> None:
    """A thick segment with round caps."""
    width = max(1, int(round(width)))
    draw.line([tuple(a), tuple(b)], fill=color, width=width)
    r = width / 2
    for x, y in (a, b):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
