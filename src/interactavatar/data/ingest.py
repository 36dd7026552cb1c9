"""Bring real clips into the clip format (schema.py).

Two sources:
- a folder of videos, each NAME.mp4 (or .mov/.mkv) with a NAME.json sidecar holding `text` and,
  per frame, any of `body`, `left_hand`, `right_hand`, `face`, `objects` (meta.json's shapes; a
  missing one counts as not annotated), optionally `clip_id`, `split`, `extra`; speech from
  NAME.wav or else the video's own audio track;
- the public release's test-case JSON list (`mp4_img`, `dwpose_img` / `dwpose_mp4`, `prompt`,
  `structured_prompt`, `obj_img`, `obj_name`, `speech_path`, `video_id`; paths relative to the
  JSON file). A case has no ground-truth video: its clip holds the reference image as a still
  video, the speech, and the keypoints and object box read back from its pose image or video with
  `render.decode_frame`, so batch generation and evaluation take release cases as they are.

Clips are added to `out` (created or extended) in a temporary sibling folder: a copy of `out` (hard
links) that receives the new clips and, last, the manifest, then replaces `out` in one rename. A
failed ingest (a bad sidecar halfway through, a full disk, an interrupt) leaves `out` as it was, or
absent, never half-made: `dvc repro`'s ingest stage never sees a partial dataset. Errors name the
input file and field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from interactavatar.data.render import decode_frame
from interactavatar.data.schema import (
    AUDIO,
    BODY_KEYPOINTS,
    MANIFEST,
    SPLITS,
    VIDEO,
    ClipMeta,
    ManifestEntry,
    ObjectBox,
    inside,
    read_manifest,
    write_manifest,
    write_meta,
)
from interactavatar.io.files import atomic_directory, atomic_path
from interactavatar.io.media import probe_video, read_audio, read_video, write_audio, write_video

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")
COPYABLE_CODECS = ("h264", "mpeg4")
SAMPLE_RATE = 16000
CASE_FPS = 25.0
HEAD_POINTS = [BODY_KEYPOINTS.index(n) for n in ("nose", "right_eye", "left_eye", "right_ear", "left_ear")]


def ingest_videos(source: str | Path, out: str | Path, split: str | None = None) -> list[ManifestEntry]:
    """Convert every video with a sidecar under `source`; a video without one is an error."""
    source = Path(source)
    videos = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES) if source.is_dir() else []
    if not videos:
        raise FileNotFoundError(f"{source}: no videos ({', '.join(VIDEO_SUFFIXES)}) to ingest")
    added = []
    with _dataset_writer(Path(out)) as writer:
        for video in videos:
            sidecar = video.with_suffix(".json")
            if not sidecar.is_file():
                raise FileNotFoundError(f"{video}: no sidecar {sidecar.name} with its text and annotations")
            data = _load_json(sidecar)
            if not isinstance(data, dict):
                raise ValueError(f"{sidecar}: expected a JSON object")
            info = probe_video(video)
            clip_id = _clip_id(data.get("clip_id") or video.stem, sidecar)
            clip_dir = writer.clip_dir(clip_id)
            empty = {"body": (18, 3), "left_hand": (21, 3), "right_hand": (21, 3), "face": (4,)}
            fields = {name: np.zeros((info.num_frames, *shape)).tolist() for name, shape in empty.items()}
            meta = ClipMeta.from_dict({
                **fields, "objects": [[] for _ in range(info.num_frames)],
                **{k: v for k, v in data.items() if k in (*empty, "objects", "text", "extra")},
                "clip_id": clip_id, "fps": info.fps, "num_frames": info.num_frames,
                "width": info.width, "height": info.height,
                "split": _split(data.get("split") or split, clip_id, sidecar),
            }, where=str(sidecar))
            meta.extra = {**meta.extra, "source": str(video)}
            wav = video.with_suffix(".wav")
            # Cut or pad the speech to the frames: AAC tracks carry padding past the last frame.
            speech = _fitted(read_audio(wav if wav.is_file() else video, SAMPLE_RATE),
                             int(round(info.num_frames / info.fps * SAMPLE_RATE)))
            _copy_or_encode(video, clip_dir / VIDEO)
            write_audio(clip_dir / AUDIO, speech, SAMPLE_RATE)
            added.append(writer.add(meta))
    return added


def ingest_cases(cases_json: str | Path, out: str | Path, num_frames: int = 17,
                 split: str = "test") -> list[ManifestEntry]:
    """Convert the release's test cases; frames = (int(seconds * 25) - 1) // 4 * 4 + 1 of the
    speech, capped by `num_frames`, as the release counts them."""
    cases_json = Path(cases_json)
    cases = _load_json(cases_json)
    if not isinstance(cases, list) or not cases:
        raise ValueError(f"{cases_json}: expected a non-empty JSON list of test cases")
    added = []
    with _dataset_writer(Path(out)) as writer:
        for index, case in enumerate(cases):
            where = f"{cases_json}[{index}]"
            if not isinstance(case, dict):
                raise ValueError(f"{where}: expected an object")
            added.append(writer.add(_case_clip(case, cases_json.parent, where, writer, index, num_frames, split)))
    return added


def _case_clip(case: dict[str, Any], base: Path, where: str, writer: _DatasetWriter, index: int,
               num_frames: int, split: str) -> ClipMeta:
    text = case.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: field prompt is missing or empty")
    clip_id = _clip_id(str(case.get("video_id") or f"case{index:04d}"), Path(where))
    reference = _image(_path(case, "mp4_img", base, where))
    height, width = reference.shape[0] // 2 * 2, reference.shape[1] // 2 * 2  # H.264 wants even sizes
    reference = reference[:height, :width]
    speech = read_audio(_path(case, "speech_path", base, where), SAMPLE_RATE)
    frames = min(num_frames, (int(len(speech) / SAMPLE_RATE * CASE_FPS) - 1) // 4 * 4 + 1)
    if frames < 1:
        raise ValueError(f"{where}: field speech_path: speech shorter than a frame")
    samples = _fitted(speech, int(round(frames / CASE_FPS * SAMPLE_RATE)))
    poses = _pose_frames(case, base, where, frames)
    decoded = [decode_frame(pose) for pose in poses]
    decoded += decoded[-1:] * (frames - len(decoded))  # a pose image or a short pose video: hold
    scale = np.array([width / poses.shape[2], height / poses.shape[1]])
    body, left, right = (np.stack([_scaled(getattr(d, part), scale) for d in decoded])
                         for part in ("body", "left_hand", "right_hand"))
    label = str(case.get("obj_name") or "object")
    objects = [[ObjectBox(label, *(d.box * np.tile(scale, 2)).tolist(), target=True)] if d.box is not None else []
               for d in decoded]
    clip_dir = writer.clip_dir(clip_id)
    write_video(clip_dir / VIDEO, np.repeat(reference[None], frames, axis=0), CASE_FPS, exact=True)
    write_audio(clip_dir / AUDIO, samples, SAMPLE_RATE)
    extra = {"source": "release-test-case", "reference_only": True,
             **{k: case[k] for k in ("structured_prompt", "obj_name", "obj_img", "video_id") if case.get(k)}}
    return ClipMeta(clip_id=clip_id, text=text.strip(), fps=CASE_FPS, num_frames=frames, width=width,
                    height=height, body=body, left_hand=left, right_hand=right,
                    face=np.stack([_face_box(b, width, height) for b in body]), objects=objects,
                    split=_split(split, clip_id, Path(where)), extra=extra)


def _pose_frames(case: dict[str, Any], base: Path, where: str, frames: int) -> np.ndarray:
    """[N <= frames, Hp, Wp, 3] pose images: the pose video's first frames, or the pose image."""
    if case.get("dwpose_mp4"):
        return read_video(_path(case, "dwpose_mp4", base, where))[0][:frames]
    if case.get("dwpose_img"):
        return _image(_path(case, "dwpose_img", base, where))[None]
    raise ValueError(f"{where}: needs dwpose_img or dwpose_mp4")


def _face_box(body: np.ndarray, width: int, height: int) -> np.ndarray:
    """The head keypoints' extent, widened by half its size each way (a pose has no face points)."""
    head = body[HEAD_POINTS]
    head = head[head[:, 2] > 0, :2]
    if len(head) < 2:
        return np.zeros(4)
    low, high = head.min(0), head.max(0)
    margin = (high - low).max() * 0.5
    return np.clip([low[0] - margin, low[1] - margin, high[0] + margin, high[1] + margin],
                   0, [width, height, width, height])


@contextlib.contextmanager
def _dataset_writer(out: Path) -> Iterator[_DatasetWriter]:
    """A writer into a staging copy of `out` that replaces `out` when the block ends without an
    error (the manifest written last); on an error the staging folder is removed, `out` untouched."""
    with atomic_directory(out) as staging:
        if out.is_dir():
            # Links stay links (validation refuses them, as before); files are hard links: a clip
            # is never rewritten in place, so sharing its bytes with the old folder is safe.
            shutil.copytree(out, staging, symlinks=True, dirs_exist_ok=True, copy_function=_link_or_copy)
        writer = _DatasetWriter(staging, out)
        yield writer
        write_manifest(staging, writer.entries)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


class _DatasetWriter:
    """Adds clips to the dataset folder `root` (a staging copy of `out`, which errors name);
    refuses ids already there."""

    def __init__(self, root: Path, out: Path) -> None:
        self.root, self.out = root, out
        # Read from `out` itself, so that an error names the manifest the user knows.
        self.entries = read_manifest(out) if (out / MANIFEST).is_file() else []
        self.ids = {e.clip_id for e in self.entries}

    def clip_dir(self, clip_id: str) -> Path:
        if clip_id in self.ids:
            raise ValueError(f"{self.out}: clip_id {clip_id!r} is already in the dataset")
        # A link already standing at the clip's name would take the clip's files out of the dataset.
        return inside(self.root, clip_id, f"{self.out}: clip_id {clip_id!r}")

    def add(self, meta: ClipMeta) -> ManifestEntry:
        write_meta(self.root / meta.clip_id, meta)
        entry = ManifestEntry(meta.clip_id, meta.clip_id, meta.split)
        self.entries.append(entry)
        self.ids.add(meta.clip_id)
        return entry


def _copy_or_encode(video: Path, target: Path) -> None:
    with av.open(str(video)) as container:
        codec = container.streams.video[0].codec_context.name
    if video.suffix.lower() == ".mp4" and codec in COPYABLE_CODECS:
        with atomic_path(target) as tmp:
            shutil.copyfile(video, tmp)
    else:
        frames, fps = read_video(video)
        write_video(target, frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2], fps, exact=True)


def _clip_id(raw: str, where: Path) -> str:
    clip_id = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.")
    if not clip_id:
        raise ValueError(f"{where}: clip id {raw!r} has no usable characters")
    return clip_id


def _split(split: str | None, clip_id: str, where: Path) -> str:
    """The given split, or a stable 80/10/10 draw from the clip id's hash."""
    if split is None:
        bucket = int(hashlib.sha256(clip_id.encode()).hexdigest(), 16) % 10
        return "val" if bucket == 8 else "test" if bucket == 9 else "train"
    if split not in SPLITS:
        raise ValueError(f"{where}: field split: {split!r} is not one of {', '.join(SPLITS)}")
    return split


def _path(case: dict[str, Any], field: str, base: Path, where: str) -> Path:
    value = case.get(field)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: field {field} is missing")
    path = (base / value) if not Path(value).is_absolute() else Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: field {field}: no file {path}")
    return path


def _image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as err:
        raise ValueError(f"{path}: not a readable image: {err}") from err


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err


def _fitted(samples: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, np.float32)
    out[: min(length, len(samples))] = samples[:length]
    return out


def _scaled(points: np.ndarray, scale: np.ndarray) -> np.ndarray:
    out = points.copy()
    out[:, :2] *= scale
    return out
