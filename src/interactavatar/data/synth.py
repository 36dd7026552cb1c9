"""A synthetic GroundedInter world: procedural clips with exact ground truth.

Each clip: a seated stick-figure avatar behind a table with 1-3 objects on it (left, middle, right
slots; distinct saturated colours), and a sentence naming one of them by colour, category and
position and the hand that acts on it ("The woman lifts the red cup on the left with her right
hand"). The hand reaches, grasps, lifts, points at or pushes that object; the mouth opens with a
speech-like signal (voiced harmonics under syllable envelopes). Everything a model must learn
(which object, which hand, where the hand goes) is visible in large flat colours, so a small model
learns it on a CPU in minutes.

Positions ("on the left") are the viewer's; hands ("right hand") are the avatar's own, as in
OpenPose: the avatar faces the camera, so its right hand is on the image's left.

Clip i of seed s depends only on (s, i): adding clips never changes earlier ones. Splits follow
the clip index (i % 10 == 1: val, == 2: test, else train), so any dataset of 3+ clips has all three.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interactavatar.config import InteractAvatarConfig
from interactavatar.data import speech
from interactavatar.data.paint import paint_clip
from interactavatar.data.render import FINGER_JOINT_FRACTIONS
from interactavatar.data.schema import (
    AUDIO,
    BODY_KEYPOINTS,
    VIDEO,
    ClipMeta,
    ManifestEntry,
    ObjectBox,
    write_manifest,
    write_meta,
)
from interactavatar.io.media import write_audio, write_video

COLORS = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 70, 225),
    "yellow": (235, 205, 20), "purple": (140, 50, 190), "orange": (245, 130, 20),
}
# Width, height as fractions of the frame's short side.
CATEGORIES = {
    "cup": (0.17, 0.2), "box": (0.2, 0.18), "ball": (0.19, 0.19), "book": (0.23, 0.11), "bottle": (0.1, 0.27),
}
ACTIONS = {"reach": "reaches for", "grasp": "grasps", "lift": "lifts", "point": "points at", "push": "pushes"}
SLOTS = {"left": 0.25, "middle": 0.5, "right": 0.75}
SLOT_PHRASES = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
SKIN_TONES = ((241, 194, 160), (224, 172, 125), (198, 134, 92), (141, 85, 54), (96, 60, 40))
OBJECT_BASE = 0.80  # fraction of the height where objects stand
# Finger ray angles (degrees, thumb first, mirrored for the left hand) and lengths (x hand length).
FINGER_ANGLES = (-50.0, -20.0, 0.0, 18.0, 36.0)
FINGER_LENGTHS = (0.7, 0.95, 1.0, 0.93, 0.8)


@dataclass
class SynthSpec:
    """Clip geometry; the defaults are the demo preset's (176x176, 17 frames at 25 fps)."""

    width: int = 176
    height: int = 176
    num_frames: int = 17
    fps: float = 25.0
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 32:
            raise ValueError(f"synth: size {self.width}x{self.height} must be even and at least 32")
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise ValueError(f"synth: num_frames={self.num_frames} is not 1+4k")

    @classmethod
    def from_config(cls, cfg: InteractAvatarConfig) -> SynthSpec:
        """Clips at a model config's video size, frame count and frame rate."""
        return cls(width=cfg.video_size[1], height=cfg.video_size[0], num_frames=cfg.num_frames,
                   fps=float(cfg.audio.fps), sample_rate=cfg.audio.sample_rate)


@dataclass
class SceneObject:
    category: str
    color: str
    slot: str
    box: np.ndarray  # [4] x0, y0, x1, y1 at rest

    @property
    def label(self) -> str:
        return f"{self.color} {self.category}"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLORS[self.color]


@dataclass
class Scene:
    subject: str          # "woman" or "man"
    objects: list[SceneObject]
    target: int           # index into objects
    action: str
    hand: str             # "left" or "right"
    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    texture: str          # plain, stripes, checker, noise
    table: tuple[int, int, int]

    def sentence(self) -> str:
        target = self.objects[self.target]
        pronoun = "her" if self.subject == "woman" else "his"
        return (f"The {self.subject} {ACTIONS[self.action]} the {target.label} {SLOT_PHRASES[target.slot]} "
                f"with {pronoun} {self.hand} hand.")

    def structured_prompt(self) -> str:
        """The release's style: one parenthesised clause per hand."""
        other = "left" if self.hand == "right" else "right"
        verb = ACTIONS[self.action]
        return (f"({self.hand.capitalize()} hand {verb} the {self.objects[self.target].label})"
                f"({other.capitalize()} hand rests on the table)")


@dataclass
class Tracks:
    """Per-frame ground truth: body [F, 18, 3], hands [F, 21, 3], face [F, 4], object boxes
    [F, N, 4] (N scene objects), mouth openness [F] in [0, 1]."""

    body: np.ndarray
    left_hand: np.ndarray
    right_hand: np.ndarray
    face: np.ndarray
    boxes: np.ndarray
    mouth: np.ndarray


def split_for(index: int) -> str:
    return {1: "val", 2: "test"}.get(index % 10, "train")


def sample_scene(rng: np.random.Generator, spec: SynthSpec) -> Scene:
    short = min(spec.width, spec.height)
    count = int(rng.integers(1, 4))
    slots = sorted(rng.choice(list(SLOTS), size=count, replace=False), key=list(SLOTS).index)
    colors = rng.choice(list(COLORS), size=count, replace=False)
    objects = []
    for slot, color in zip(slots, colors, strict=True):
        category = str(rng.choice(list(CATEGORIES)))
        w, h = (np.array(CATEGORIES[category]) * rng.uniform(0.9, 1.1) * short)
        x = SLOTS[slot] * spec.width + rng.uniform(-0.01, 0.01) * short
        base = OBJECT_BASE * spec.height
        objects.append(SceneObject(category, str(color), str(slot), np.array([x - w / 2, base - h, x + w / 2, base])))
    return Scene(
        subject=str(rng.choice(["woman", "man"])),
        objects=objects,
        target=int(rng.integers(count)),
        action=str(rng.choice(list(ACTIONS))),
        hand=str(rng.choice(["left", "right"])),
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        shirt=_muted(rng, 0.15, 0.35, 0.3, 0.55),
        hair=_muted(rng, 0.2, 0.6, 0.1, 0.45),
        background=_muted(rng, 0.05, 0.2, 0.75, 0.92),
        texture=str(rng.choice(["plain", "stripes", "checker", "noise"])),
        table=_muted(rng, 0.25, 0.35, 0.45, 0.6, hue=(0.05, 0.11)),
    )


def pose_tracks(scene: Scene, spec: SynthSpec, mouth: np.ndarray) -> Tracks:
    """Animate the acting hand: rest, move to the goal (10-60% of the clip), then the action's
    second phase (60-90%: lift or push), then hold."""
    w, h, short = spec.width, spec.height, min(spec.width, spec.height)
    frames = spec.num_frames
    t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    move, act = _smoothstep((t - 0.1) / 0.5), _smoothstep((t - 0.6) / 0.3)
    target = scene.objects[scene.target]
    centre = (target.box[:2] + target.box[2:]) / 2
    hand_length = 0.09 * short
    side = -1.0 if scene.hand == "right" else 1.0  # the avatar's right is the image's left
    # Hands rest on the table's front edge and approach the object from there.
    rests = {name: np.array([w / 2 + s * 0.125 * short, 0.88 * h]) for name, s in (("right", -1.0), ("left", 1.0))}
    reach_dir = _unit(centre - rests[scene.hand])
    half = 0.5 * min(target.box[2] - target.box[0], target.box[3] - target.box[1])
    if scene.action == "point":
        # The arm reaches out from the shoulder along the line to the object; fingertips stop
        # short of it.
        shoulder = np.array([w / 2 + side * 0.15 * short, 0.36 * h])
        distance = np.linalg.norm(centre - shoulder)
        goal = shoulder + _unit(centre - shoulder) * max(distance - half - 1.2 * hand_length, 0.15 * short)
    else:
        # The wrist stops before the object's centre: fingers on it (reach), around it (grasp,
        # lift) or against its near side (push).
        goal_offset = {"reach": 0.9 * hand_length, "grasp": 0.6 * hand_length,
                       "lift": 0.6 * hand_length, "push": half + 0.6 * hand_length}[scene.action]
        goal = centre - reach_dir * goal_offset
    hand_dir = _unit(centre - goal)
    second = np.zeros(2)
    if scene.action == "lift":
        second = np.array([0.0, -0.14 * short])
    elif scene.action == "push":
        second = (np.array([np.sign(reach_dir[0]) * 0.08 * short, 0.0]) if abs(reach_dir[0]) > 0.3
                  else np.array([0.0, -0.06 * short]))
    lean = np.clip((goal[0] - w / 2) / (0.25 * short), -1, 1) * 0.07 * short * move

    body = np.zeros((frames, len(BODY_KEYPOINTS), 3))
    hands = {"left": np.zeros((frames, 21, 3)), "right": np.zeros((frames, 21, 3))}
    face = np.zeros((frames, 4))
    boxes = np.repeat(np.stack([o.box for o in scene.objects])[None], frames, axis=0)
    if scene.action in ("lift", "push"):
        boxes[:, scene.target] += np.tile(second, 2)[None] * act[:, None]
    for f in range(frames):
        head = np.array([w / 2 + 1.2 * lean[f], 0.19 * h + 0.01 * short * mouth[f]])
        radius = 0.085 * short
        points = _body_points(w, h, short, head, radius, lean[f])
        for name in ("right", "left"):
            s = -1.0 if name == "right" else 1.0
            shoulder = points[BODY_KEYPOINTS.index(f"{name}_shoulder")]
            rest = rests[name] + [0.0, s * 0.004 * short * np.sin(7 * t[f])]
            if name == scene.hand:
                wrist = rest + (goal - rest) * move[f] + second * act[f]
                extension = _extension(scene.action, t[f])
            else:
                wrist, extension = rest, np.full(5, 0.9)
            elbow, wrist = _two_bone(shoulder, wrist, 0.26 * short, 0.25 * short, s)
            points[BODY_KEYPOINTS.index(f"{name}_elbow")] = elbow
            points[BODY_KEYPOINTS.index(f"{name}_wrist")] = wrist
            # The acting hand turns from the forearm's direction to face the object as it goes.
            turn = move[f] if name == scene.hand else 0.0
            direction = _unit((1 - turn) * _unit(wrist - elbow) + turn * hand_dir)
            hands[name][f] = _hand(wrist, direction, hand_length, extension, s)
        body[f, :, :2] = points
        body[f, :, 2] = 1.0
        face[f] = [head[0] - radius, head[1] - radius, head[0] + radius, head[1] + radius]
    for name in ("right_knee", "right_ankle", "left_knee", "left_ankle"):  # below the frame
        body[:, BODY_KEYPOINTS.index(name)] = 0.0
    return Tracks(body, hands["left"], hands["right"], face, boxes, mouth)


def make_clip(root: Path, seed: int, index: int, spec: SynthSpec) -> ManifestEntry:
    """Generate clip `index` of `seed` into root/<clip_id>/ (video, audio, meta)."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng, spec)
    seconds = spec.num_frames / spec.fps
    voice = speech.synthesize(rng, seconds, spec.sample_rate, high=scene.subject == "woman")
    mouth = speech.frame_envelope(voice.envelope, spec.num_frames, spec.fps, spec.sample_rate)
    tracks = pose_tracks(scene, spec, mouth)
    clip_id = f"synth{seed}-{index:06d}"
    clip_dir = root / clip_id
    write_video(clip_dir / VIDEO, paint_clip(scene, tracks, spec, rng), spec.fps, exact=True)
    write_audio(clip_dir / AUDIO, voice.samples, spec.sample_rate)
    objects = [[ObjectBox(o.label, *tracks.boxes[f, i].tolist(), target=i == scene.target)
                for i, o in enumerate(scene.objects)] for f in range(spec.num_frames)]
    meta = ClipMeta(
        clip_id=clip_id, text=scene.sentence(), fps=spec.fps, num_frames=spec.num_frames,
        width=spec.width, height=spec.height, body=tracks.body, left_hand=tracks.left_hand,
        right_hand=tracks.right_hand, face=tracks.face, objects=objects, split=split_for(index),
        extra={"source": "synth", "seed": seed, "index": index, "action": scene.action, "hand": scene.hand,
               "target": scene.objects[scene.target].label, "slot": scene.objects[scene.target].slot,
               "structured_prompt": scene.structured_prompt()},
    )
    write_meta(clip_dir, meta)
    return ManifestEntry(clip_id, clip_id, meta.split)


def synthesize(out: str | Path, num_clips: int, seed: int, spec: SynthSpec | None = None) -> list[ManifestEntry]:
    """Write a dataset of `num_clips` clips to `out` (created; the manifest is written last)."""
    if num_clips < 1:
        raise ValueError(f"synth: num_clips={num_clips} must be at least 1")
    spec = spec or SynthSpec()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    entries = [make_clip(root, seed, index, spec) for index in range(num_clips)]
    write_manifest(root, entries)
    return entries


def _body_points(w: float, h: float, short: float, head: np.ndarray, radius: float, lean: float) -> np.ndarray:
    """[18, 2] rest positions of the OpenPose points (arms are set by the caller)."""
    p = np.zeros((len(BODY_KEYPOINTS), 2))
    at = {name: i for i, name in enumerate(BODY_KEYPOINTS)}
    for s, name in ((-1.0, "right"), (1.0, "left")):
        p[at[f"{name}_shoulder"]] = [w / 2 + lean + s * 0.15 * short, 0.36 * h]
        p[at[f"{name}_hip"]] = [w / 2 + s * 0.09 * short, 0.95 * h]
        p[at[f"{name}_eye"]] = head + [s * 0.38 * radius, -0.12 * radius]
        p[at[f"{name}_ear"]] = head + [s * 0.95 * radius, 0.05 * radius]
    p[at["neck"]] = (p[at["right_shoulder"]] + p[at["left_shoulder"]]) / 2
    p[at["nose"]] = head + [0.0, 0.2 * radius]
    return p


def _two_bone(shoulder: np.ndarray, wrist: np.ndarray, upper: float, fore: float, side: float):
    """Elbow and (reachable) wrist for an arm; the elbow bends outwards, to `side` (-1 left of the
    image, +1 right). A near target foreshortens the arm (it points at the camera) instead of
    folding it, so the forearm, and the hand after it, keep pointing where the hand goes."""
    offset = wrist - shoulder
    distance = np.linalg.norm(offset)
    foreshortening = min(1.0, 1.1 * distance / (upper + fore))
    upper, fore = upper * foreshortening, fore * foreshortening
    distance = np.clip(distance, abs(upper - fore) + 1e-6, (upper + fore) * 0.999)
    direction = _unit(offset)
    wrist = shoulder + direction * distance
    along = (upper ** 2 - fore ** 2 + distance ** 2) / (2 * distance)
    across = np.sqrt(max(upper ** 2 - along ** 2, 0.0))
    normal = np.array([-direction[1], direction[0]])
    if normal[0] * side < 0:
        normal = -normal
    return shoulder + direction * along + normal * across, wrist


def _hand(wrist: np.ndarray, direction: np.ndarray, length: float, extension: np.ndarray, side: float) -> np.ndarray:
    """[21, 3] straight fingers fanned around `direction`; `extension` [5] shortens curled fingers.
    The thumb sits on the body's side: mirrored between the two hands."""
    hand = np.zeros((21, 3))
    hand[0] = [*wrist, 1.0]
    for finger, (angle, reach) in enumerate(zip(FINGER_ANGLES, FINGER_LENGTHS, strict=True)):
        theta = np.deg2rad(angle * side)
        ray = np.array([direction[0] * np.cos(theta) - direction[1] * np.sin(theta),
                        direction[0] * np.sin(theta) + direction[1] * np.cos(theta)])
        for joint, fraction in enumerate(FINGER_JOINT_FRACTIONS):
            hand[1 + 4 * finger + joint] = [*(wrist + ray * length * reach * extension[finger] * fraction), 1.0]
    return hand


def _extension(action: str, t: float) -> np.ndarray:
    """How far each finger is stretched (1 open, ~0.55 curled) at clip time t in [0, 1]."""
    closing = float(_smoothstep(np.array([(t - 0.45) / 0.15]))[0])
    if action in ("grasp", "lift"):
        return np.full(5, 1.0 - 0.45 * closing)
    if action == "point":
        return np.array([0.55, 1.0, 0.55, 0.55, 0.55]) * closing + (1 - closing) * 0.9
    return np.full(5, 1.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else np.array([0.0, 1.0])


def _muted(rng: np.random.Generator, s0: float, s1: float, v0: float, v1: float,
           hue: tuple[float, float] = (0.0, 1.0)) -> tuple[int, int, int]:
    rgb = colorsys.hsv_to_rgb(rng.uniform(*hue), rng.uniform(s0, s1), rng.uniform(v0, v1))
    return tuple(int(round(255 * c)) for c in rgb)
