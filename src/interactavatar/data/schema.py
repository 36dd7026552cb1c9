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

This module checks structure (types, shapes, known fields, UTF-8 strings) and names the file and
field it rejects; whether the values make sense (finite, inside the frame, matching the video) is
the validator's job, so that a bad clip is reported with the others instead of stopping a whole run.

It is also the one place that turns the manifest's and meta.json's paths into files (`read_clip`):
a path must stay inside its folder (relative, no `..`) and nothing on the way to a file may be a
symbolic link. A link or an escaping path lets a dataset's hash, its DVC version and its validation
describe other bytes than the ones training reads, so the loader refuses them itself, validated or
not (UnsafePathError, naming the manifest line or meta.json, the clip and the field).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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
META_FIELDS = ("clip_id", "text", "fps", "num_frames", "width", "height", "split", "video", "audio",
               "body", "left_hand", "right_hand", "face", "objects", "extra")
OBJECT_FIELDS = ("label", "box", "target")
MANIFEST_FIELDS = ("clip_id", "path", "split")


class UnsafePathError(ValueError):
    """A dataset path that leaves its folder, or a file reached through a symbolic link."""


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
        # An unknown field is most often a misspelt optional one ("vidoe"), which would otherwise
        # fall back to its default in silence; free-form facts belong under `extra`.
        _known_fields(data, META_FIELDS, where)
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
            video=_file_name(data, "video", where) or VIDEO,
            # Absent: the default audio.wav; an explicit null: the video's own audio track.
            audio=_file_name(data, "audio", where) if "audio" in data else AUDIO,
            extra=_field(data, "extra", dict, where, required=False) or {},
        )


@dataclass
class ManifestEntry:
    """One line of manifest.jsonl: the clip, its folder relative to the dataset, its split; `line`
    (1-based; 0 for an entry made in code) is where errors point."""

    clip_id: str
    path: str
    split: str | None
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class ClipFiles:
    """The files of one clip that training reads, each inside the dataset and reached without a
    link; `speech` is the audio file, or the video when meta.json's audio is null (its track)."""

    folder: Path
    meta: Path
    video: Path
    speech: Path


def read_clip(root: str | Path, entry: ManifestEntry) -> tuple[ClipMeta, ClipFiles]:
    """A manifest entry's meta.json and files. UnsafePathError when a path leaves the dataset or
    passes through a link; FileNotFoundError when the folder or its meta.json is missing; ValueError
    when meta.json is malformed. Media files are not opened: a missing one is the reader's to report."""
    root = Path(root)
    where = f"{root / MANIFEST}:{entry.line}: clip {entry.clip_id!r}: field path"
    folder = inside(root, entry.path, where)
    if not folder.is_dir():
        raise FileNotFoundError(f"{where}: no folder {folder}")
    meta_path = inside(folder, META, where)
    if not meta_path.is_file():
        raise FileNotFoundError(f"{where}: {folder} has no {META}")
    meta = _parse_meta(meta_path)
    video = inside(folder, meta.video, f"{meta_path}: field video")
    speech = inside(folder, meta.audio, f"{meta_path}: field audio") if meta.audio else video
    return meta, ClipFiles(folder, meta_path, video, speech)


def dataset_files(root: str | Path) -> list[Path]:
    """Every file training reads, sorted by path relative to `root`: manifest.jsonl and, for every
    clip it lists whatever the split (a stage trains on one, evaluation reads the others of the
    same dataset), what `read_clip` gives the loader. Refuses what `read_clip` refuses."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    files = {root / MANIFEST}
    for entry in read_manifest(root):
        _, clip = read_clip(root, entry)
        files |= {clip.meta, clip.video, clip.speech}
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def read_meta(clip_dir: str | Path) -> ClipMeta:
    """A clip folder's meta.json (refused when it is a link)."""
    return _parse_meta(inside(Path(clip_dir), META, str(clip_dir)))


def inside(base: Path, relative: str, where: str) -> Path:
    """base / relative, refused (UnsafePathError naming `where`) when `relative` is not a path below
    `base` or any part of it below `base` is a symbolic link. `base` itself is the caller's choice."""
    path = base
    for part in PurePosixPath(_relative_path(relative, where)).parts:
        path = path / part
        if path.is_symlink():
            raise UnsafePathError(f"{where}: {path} is a symbolic link; a dataset holds its own files, not links")
    return path


def _relative_path(value: str, where: str) -> str:
    """`value` if it names something below its folder; UnsafePathError naming `where` otherwise."""
    pure = PurePosixPath(value)
    if "\0" in value:  # the OS would refuse it with a bare "embedded null byte", naming nothing
        raise UnsafePathError(f"{where}: {value!r} holds a NUL character")
    if pure.is_absolute():
        raise UnsafePathError(f"{where}: {value!r} is absolute; paths in a dataset are relative to their folder")
    if ".." in pure.parts:
        raise UnsafePathError(f"{where}: {value!r} climbs out of its folder with '..'")
    if not pure.parts:
        raise UnsafePathError(f"{where}: {value!r} names nothing below its folder")
    return value


def _parse_meta(path: Path) -> ClipMeta:
    return ClipMeta.from_dict(_load_json(path.read_bytes(), str(path)), where=str(path))


def write_meta(clip_dir: str | Path, meta: ClipMeta) -> None:
    write_text_atomic(Path(clip_dir) / META, json.dumps(meta.to_dict(), indent=1) + "\n")


def read_manifest(root: str | Path) -> list[ManifestEntry]:
    """The manifest's entries; a path that is absolute, empty or climbs with `..` is refused here,
    a link on the way to a clip when the clip is read (`read_clip`)."""
    path = inside(Path(root), MANIFEST, str(root))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (is {root} a dataset folder?)")
    entries = []
    # JSON Lines ends lines at "\n" only: str.splitlines would also split at U+2028 and friends.
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        data = _load_json(line, where)
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object")
        _known_fields(data, MANIFEST_FIELDS, where)
        clip_id = _field(data, "clip_id", str, where)
        entry_path = _field(data, "path", str, where)
        _relative_path(entry_path, f"{where}: clip {clip_id!r}: field path")
        split = _field(data, "split", str, where, required=False)
        entries.append(ManifestEntry(clip_id, entry_path, split, number))
    return entries


def write_manifest(root: str | Path, entries: list[ManifestEntry]) -> None:
    lines = [json.dumps({"clip_id": e.clip_id, "path": e.path, "split": e.split}) for e in entries]
    write_text_atomic(Path(root) / MANIFEST, "".join(line + "\n" for line in lines))


def _rounded(values: np.ndarray) -> list:
    # Sub-millipixel digits are noise; rounding keeps meta.json small and byte-stable.
    return np.round(np.asarray(values, dtype=np.float64), 3).tolist()


def _load_json(raw: bytes, where: str) -> Any:
    """Parse JSON bytes. Text that is not UTF-8 (raw bytes, or lone surrogates escaped as \\udcXX)
    is refused naming the field holding it rather than a byte offset; a key given twice is refused
    (JSON keeps the last in silence)."""
    try:
        data = json.loads(raw.decode("utf-8", errors="surrogateescape"), object_pairs_hook=_unique_keys(where))
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON: {err}") from err
    # Only text with bad bytes or \u escapes can hold a surrogate: skip the walk for the rest.
    if b"\\u" in raw or not _is_utf8_bytes(raw):
        bad = _not_utf8(data, "")
        if bad is not None:
            raise ValueError(f"{where}: field {bad}: not valid UTF-8 text")
    return data


def _is_utf8_bytes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _not_utf8(value: Any, name: str) -> str | None:
    """The field (name[i].key...) of the first string or key in `value` that is not valid UTF-8."""
    if isinstance(value, str):
        return None if _is_utf8(value) else name
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and not _is_utf8(key):
            return f"{name}.{key!r}" if name else repr(key)  # repr escapes the surrogates: printable
        bad = _not_utf8(item, f"{name}[{key}]" if isinstance(key, int) else f"{name}.{key}" if name else key)
        if bad is not None:
            return bad
    return None


def _unique_keys(where: str):
    def pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in pairs:
            if key in data:  # repr keeps a key that is not UTF-8 printable (the report is UTF-8)
                raise ValueError(f"{where}: field {key if _is_utf8(key) else repr(key)} appears twice")
            data[key] = value
        return data
    return pairs_to_dict


def _known_fields(data: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: field {unknown[0]}: unknown (known: {', '.join(known)}"
                         f"{'; free-form facts go under extra' if 'extra' in known else ''})")


def _field(data: dict, name: str, kind: type | tuple[type, ...], where: str, required: bool = True) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise ValueError(f"{where}: field {name} is missing")
        return None
    # bool is an int to Python, never to a dataset: true is no frame count, 1 is no flag.
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise ValueError(f"{where}: field {name}: expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _file_name(data: dict, name: str, where: str) -> str | None:
    """meta.json's `video` or `audio`: a path below the clip folder, or None when absent or null."""
    value = _field(data, name, str, where, required=False)
    return None if value is None else _relative_path(value, f"{where}: field {name}")


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
        _known_fields(item, OBJECT_FIELDS, at)
        box = _array(item, "box", (4,), at)
        boxes.append(ObjectBox(_field(item, "label", str, at), *box.tolist(),
                               target=bool(_field(item, "target", bool, at, required=False))))
    return boxes
