"""The clip format: `meta.json` per clip, `manifest.jsonl` per dataset.

A dataset is a folder:

    DATASET/manifest.jsonl           one JSON object per line: {"clip_id", "path", "split"}
    DATASET/<path>/video.mp4         H.264 or MPEG-4 frames
    DATASET/<path>/audio.wav         speech, 16 kHz mono PCM (absent: the video's audio track)
    DATASET/<path>/meta.json         ClipMeta below

Coordinates are pixels of the clip's own video (x right, y down). Keypoints are (x, y, confidence);
confidence 0 means "not visible", and such points are stored as (0, 0, 0) like OpenPose does.
Body keypoints follow the OpenPose-18 order (BODY_KEYPOINTS); hands follow the 21-point OpenPose
hand order (wrist, then four points per finger from the palm outwards: thumb, index, middle, ring,
little). "left" and "right" are the person's own sides, as in OpenPose.

This module checks structure (types, shapes) and names the file and field it rejects; whether the
values make sense (finite, inside the frame, matching the video) is the validator's job, so that a
bad clip is reported with the others instead of stopping a whole run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interactavatar.io.files import write_text_atomic

BODY_KEYPOINTS = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
FINGERS = ("thumb", "index", "middle", "ring", "little")
HAND_KEYPOINTS = ("wrist",) + tuple(f"{finger}_{joint}" for finger in FINGERS for joint in range(1, 5))
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.jsonl"
META = "meta.json"
VIDEO = "video.mp4"
AUDIO = "audio.wav"


@dataclass
class ObjectBox:
    """An object's axis-aligned box in one frame; `target` marks the object the text refers to."""

    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    target: bool = False

    def as_array(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float64)


@dataclass
class ClipMeta:
    """Everything known about one clip besides its pixels and samples.

    body: [F, 18, 3], left_hand / right_hand: [F, 21, 3], face: [F, 4] (x0, y0, x1, y1);
    objects: F lists of ObjectBox. `extra` carries generator or source facts (action, hand,
    structured prompt...) that no consumer depends on.
    """

    clip_id: str
    text: str
    fps: float
    num_frames: int
    width: int
    height: int
    body: np.ndarray
    left_hand: np.ndarray
    right_hand: np.ndarray
    face: np.ndarray
    objects: list[list[ObjectBox]]
    split: str | None = None
    video: str = VIDEO
    audio: str | None = AUDIO
    extra: dict[str, Any] = field(default_factory=dict)

    def target_boxes(self) -> np.ndarray:
        """[F, 4] the target object's box per frame; NaN rows where no object is the target."""
        boxes = np.full((self.num_frames, 4), np.nan)
        for index, frame in enumerate(self.objects):
            for box in frame:
                if box.target:
                    boxes[index] = box.as_array()
        return boxes

    def to_dict(self) -> dict[str, Any]:
        return {
            "clip_id": self.clip_id, "text": self.text, "fps": self.fps,
            "num_frames": self.num_frames, "width": self.width, "height": self.height,
            "split": self.split, "video": self.video, "audio": self.audio,
            "body": _rounded(self.body), "left_hand": _rounded(self.left_hand),
            "right_hand": _rounded(self.right_hand), "face": _rounded(self.face),
            "objects": [[{"label": b.label, "box": _rounded(b.as_array()), "target": b.target}
                         for b in frame] for frame in self.objects],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "meta") -> ClipMeta:
        """Parse a meta.json object; errors read "<where>: field <name>: <problem>"."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object")
        num_frames = _field(data, "num_frames", int, where)
        objects = _field(data, "objects", list, where)
        if len(objects) != num_frames:
            raise ValueError(f"{where}: field objects: {len(objects)} frames, num_frames is {num_frames}")
        return cls(
            clip_id=_field(data, "clip_id", str, where),
            text=_field(data, "text", str, where),
            fps=float(_field(data, "fps", (int, float), where)),
            num_frames=num_frames,
            width=_field(data, "width", int, where),
            height=_field(data, "height", int, where),
            body=_array(data, "body", (num_frames, len(BODY_KEYPOINTS), 3), where),
            left_hand=_array(data, "left_hand", (num_frames, len(HAND_KEYPOINTS), 3), where),
            right_hand=_array(data, "right_hand", (num_frames, len(HAND_KEYPOINTS), 3), where),
            face=_array(data, "face", (num_frames, 4), where),
            objects=[_frame_objects(frame, f"{where}: field objects[{i}]") for i, frame in enumerate(objects)],
            split=_field(data, "split", str, where, required=False),
            video=_field(data, "video", str, where, required=False) or VIDEO,
            # Absent: the default audio.wav; an explicit null: the video's own audio track.
            audio=_field(data, "audio", str, where, required=False) if "audio" in data else AUDIO,
            extra=_field(data, "extra", dict, where, required=False) or {},
        )


@dataclass
class ManifestEntry:
    """One line of manifest.jsonl: the clip, its folder relative to the dataset, its split."""

    clip_id: str
    path: str
    split: str | None


def read_meta(clip_dir: str | Path) -> ClipMeta:
    path = Path(clip_dir) / META
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    return ClipMeta.from_dict(data, where=str(path))


def write_meta(clip_dir: str | Path, meta: ClipMeta) -> None:
    write_text_atomic(Path(clip_dir) / META, json.dumps(meta.to_dict(), indent=1) + "\n")


def read_manifest(root: str | Path) -> list[ManifestEntry]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (is {root} a dataset folder?)")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object")
        entries.append(ManifestEntry(
            clip_id=_field(data, "clip_id", str, where),
            path=_field(data, "path", str, where),
            split=_field(data, "split", str, where, required=False),
        ))
    return entries


def write_manifest(root: str | Path, entries: list[ManifestEntry]) -> None:
    lines = [json.dumps({"clip_id": e.clip_id, "path": e.path, "split": e.split}) for e in entries]
    write_text_atomic(Path(root) / MANIFEST, "".join(line + "\n" for line in lines))


def _rounded(values: np.ndarray) -> list:
    # Sub-millipixel digits are noise; rounding keeps meta.json small and byte-stable.
    return np.round(np.asarray(values, dtype=np.float64), 3).tolist()


def _field(data: dict, name: str, kind: type | tuple[type, ...], where: str, required: bool = True) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise ValueError(f"{where}: field {name} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{where}: field {name}: expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _array(data: dict, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    value = _field(data, name, list, where)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: field {name}: not a numeric array ({err})") from err
    if array.shape != shape:
        raise ValueError(f"{where}: field {name}: shape {list(array.shape)}, expected {list(shape)}")
    return array


def _frame_objects(frame: Any, where: str) -> list[ObjectBox]:
    if not isinstance(frame, list):
        raise ValueError(f"{where}: expected a list of objects")
    boxes = []
    for i, item in enumerate(frame):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{at}: expected an object")
        box = _array(item, "box", (4,), at)
        boxes.append(ObjectBox(_field(item, "label", str, at), *box.tolist(),
                               target=bool(item.get("target", False))))
    return boxes
