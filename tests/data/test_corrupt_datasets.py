"""The corruption corpus (#16, Data): distinct ways a dataset goes bad, each of which
`interactavatar data validate` must refuse, with a line naming the file and the field (or, for a
file that is wrong as a whole, the file). The variants that would make training read outside the
dataset, or through a link, are refused by the loader as well, with validation skipped: the
training CLI can be pointed at a folder nobody validated.

Every variant corrupts a copy of one small synthetic dataset (three clips: train, val, test); the
first clip is the one broken. `outside` is a folder next to the dataset holding a good copy of that
clip, so a path or link that escapes leads to readable files, as it would in the wild, and only
the escape itself is wrong.

Against the code before this corpus (commit c04a12a), 22 of its 78 variants passed validation
silently (all 14 links and escapes, which the loader then read too; NaN fps; confidences outside
[0, 1]; a non-boolean target; unknown and duplicated fields), and 44 more were refused without a
line naming the file and the field.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers.datasets import make_dataset
from PIL import Image

from interactavatar.cli import main
from interactavatar.config import preset
from interactavatar.data.dataset import ClipDataset
from interactavatar.io.media import read_video, write_video

CLIP = "synth5-000000"  # the train clip every variant breaks (synth5-000001: val, synth5-000002: test)
OTHER = "synth5-000001"


@dataclass(frozen=True)
class Variant:
    name: str
    corrupt: Callable[[Path, Path], None]  # (dataset, outside)
    names: tuple[str, ...]  # what one line of the refusal must name: clip, file, field
    escapes: bool = False  # reads outside the dataset or through a link: the loader refuses it too


def _read_meta(root: Path) -> dict:
    return json.loads((root / CLIP / "meta.json").read_text())


def meta(change: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    """A corruption that edits the clip's meta.json as JSON (NaN and Infinity as Python's json writes them)."""
    def corrupt(root: Path, outside: Path) -> None:
        data = _read_meta(root)
        change(data)
        (root / CLIP / "meta.json").write_text(json.dumps(data))
    return corrupt


def meta_text(change: Callable[[str], str | bytes]) -> Callable[[Path, Path], None]:
    """A corruption of meta.json's text (what JSON editing cannot express)."""
    def corrupt(root: Path, outside: Path) -> None:
        path = root / CLIP / "meta.json"
        text = change(json.dumps(_read_meta(root)))
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return corrupt


def manifest(change: Callable[[list[dict]], object]) -> Callable[[Path, Path], None]:
    """A corruption that edits manifest.jsonl's lines as JSON objects."""
    def corrupt(root: Path, outside: Path) -> None:
        path = root / "manifest.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        change(lines)
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return corrupt


def clip_file(name: str, change: Callable[[Path, Path], object]) -> Callable[[Path, Path], None]:
    """A corruption of one of the clip's files: change(path, outside's copy of it)."""
    return lambda root, outside: change(root / CLIP / name, outside / CLIP / name)


def _link(path: Path, target: Path) -> None:
    """Replace `path` (a file or a folder) by a link to `target`."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(target)


def first_line(**changes: object) -> Callable[[Path, Path], None]:
    """A corruption that sets fields of the manifest's first line (the broken clip's)."""
    return manifest(lambda lines: lines[0].update(changes))


def meta_set(**changes: object) -> Callable[[Path, Path], None]:
    return meta(lambda data: data.update(changes))


def to_outside(make: Callable[[Path], Callable[[Path, Path], None]]) -> Callable[[Path, Path], None]:
    """A corruption that needs the outside folder's absolute path to say what it does."""
    return lambda root, outside: make(outside)(root, outside)


def _parent_link(root: Path, outside: Path) -> None:
    shutil.rmtree(root / CLIP)
    (root / "group").symlink_to(outside)
    first_line(path=f"group/{CLIP}")(root, outside)


def _link_inside(root: Path, outside: Path) -> None:
    (root / CLIP).rename(root / "stash")
    (root / CLIP).symlink_to("stash")


def _link_manifest(root: Path, outside: Path) -> None:
    shutil.copy(root / "manifest.jsonl", outside / "manifest.jsonl")
    _link(root / "manifest.jsonl", outside / "manifest.jsonl")


def _swap(source: str, target: str) -> Callable[[Path, Path], None]:
    """The clip's `target` file holds a copy of its `source` file (another media type)."""
    return lambda root, outside: shutil.copy(root / CLIP / source, root / CLIP / target)


def _reencode(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path, Path], None]:
    def write(path: Path, original: Path) -> None:
        frames, fps = read_video(path)
        write_video(path, change(frames), fps, exact=True)
    return write


def _png(path: Path, original: Path) -> None:
    Image.fromarray(read_video(path)[0][0]).save(path, format="PNG")


def _resampled(path: Path, original: Path) -> None:
    samples, rate = soundfile.read(path)
    soundfile.write(path, samples[::2], rate // 2)


def _half_audio(path: Path, original: Path) -> None:
    samples, rate = soundfile.read(path)
    soundfile.write(path, samples[: len(samples) // 2], rate)


def _truncate(size: Callable[[int], int]) -> Callable[[Path, Path], None]:
    return lambda path, original: path.write_bytes(path.read_bytes()[: size(path.stat().st_size)])


def _remove(path: Path, original: Path) -> None:
    path.unlink()


def _folder_instead(path: Path, original: Path) -> None:
    path.unlink()
    path.mkdir()


def _point(field: str, frame: int, point: int, value: list) -> Callable[[Path, Path], None]:
    return meta(lambda data: data[field][frame].__setitem__(point, value))


def _box(frame: int, value: list) -> Callable[[Path, Path], None]:
    return meta(lambda data: data["objects"][frame][0].__setitem__("box", value))


def _face(frame: int, value: list) -> Callable[[Path, Path], None]:
    return meta(lambda data: data["face"].__setitem__(frame, value))


def _cut_frames(data: dict) -> None:
    data["num_frames"] = 4
    for name in ("body", "left_hand", "right_hand", "face", "objects"):
        data[name] = data[name][:4]


def _text(insert: str, encoding: str = "utf-8") -> Callable[[Path, Path], None]:
    """Put `insert` (JSON source) at the start of meta.json's text, the file then in `encoding`."""
    return meta_text(lambda text: text.replace('"text": "', f'"text": "{insert}', 1).encode(encoding))


NAN, INF = float("nan"), float("inf")
LINE = ("manifest.jsonl:1", CLIP)  # the broken clip's manifest line
META = (CLIP, "meta.json")
VIDEO = (CLIP, "video.mp4", "field video")
AUDIO = (CLIP, "audio.wav", "field audio")
LINK = "symbolic link"

CORPUS = [
    # Links and paths that leave the dataset: readable files, read from the wrong place.
    Variant("video-symlink", clip_file("video.mp4", _link), (*VIDEO, LINK), escapes=True),
    Variant("audio-symlink", clip_file("audio.wav", _link), (*AUDIO, LINK), escapes=True),
    Variant("meta-symlink", clip_file("meta.json", _link), (*LINE, "field path", "meta.json", LINK), escapes=True),
    Variant("clip-folder-symlink", lambda root, outside: _link(root / CLIP, outside / CLIP),
            (*LINE, "field path", LINK), escapes=True),
    Variant("clip-folder-symlink-inside", _link_inside, (*LINE, "field path", LINK), escapes=True),
    Variant("parent-folder-symlink", _parent_link, (*LINE, "field path", "group", LINK), escapes=True),
    Variant("manifest-symlink", _link_manifest, ("manifest.jsonl", LINK), escapes=True),
    Variant("path-dotdot", first_line(path=f"../outside/{CLIP}"), (*LINE, "field path", "'..'"), escapes=True),
    Variant("path-dotdot-inner", first_line(path=f"{CLIP}/../../outside/{CLIP}"), (*LINE, "field path", "'..'"),
            escapes=True),
    Variant("path-absolute", to_outside(lambda outside: first_line(path=str(outside / CLIP))),
            (*LINE, "field path", "absolute"), escapes=True),
    Variant("path-empty", first_line(path=""), (*LINE, "field path")),
    Variant("video-field-dotdot", meta_set(video=f"../../outside/{CLIP}/video.mp4"), (*META, "field video", "'..'"),
            escapes=True),
    Variant("video-field-absolute", to_outside(lambda outside: meta_set(video=str(outside / CLIP / "video.mp4"))),
            (*META, "field video", "absolute"), escapes=True),
    Variant("audio-field-dotdot", meta_set(audio=f"../{OTHER}/audio.wav"), (*META, "field audio", "'..'"),
            escapes=True),
    Variant("audio-field-absolute", to_outside(lambda outside: meta_set(audio=str(outside / CLIP / "audio.wav"))),
            (*META, "field audio", "absolute"), escapes=True),
    # Missing files.
    Variant("video-missing", clip_file("video.mp4", _remove), VIDEO),
    Variant("audio-missing", clip_file("audio.wav", _remove), AUDIO),
    Variant("meta-missing", clip_file("meta.json", _remove), (*LINE, "field path", "meta.json")),
    Variant("clip-folder-missing", lambda root, outside: shutil.rmtree(root / CLIP), (*LINE, "field path")),
    Variant("video-is-a-folder", clip_file("video.mp4", _folder_instead), VIDEO),
    # Truncated, empty, or another kind of file under the right name.
    Variant("video-truncated", clip_file("video.mp4", _truncate(lambda size: size // 2)), VIDEO),
    Variant("video-zero-bytes", clip_file("video.mp4", _truncate(lambda size: 0)), VIDEO),
    Variant("audio-zero-bytes", clip_file("audio.wav", _truncate(lambda size: 0)), AUDIO),
    Variant("audio-header-only", clip_file("audio.wav", _truncate(lambda size: 20)), AUDIO),
    Variant("audio-half-length", clip_file("audio.wav", _half_audio), (*AUDIO, "-2.50 frames")),
    Variant("video-holds-a-wav", _swap("audio.wav", "video.mp4"), (*VIDEO, "not an MP4")),
    Variant("video-holds-a-png", clip_file("video.mp4", _png), (*VIDEO, "not an MP4")),
    Variant("audio-holds-an-mp4", _swap("video.mp4", "audio.wav"), (*AUDIO, "not a WAV")),
    Variant("audio-holds-text", clip_file("audio.wav", lambda path, _: path.write_text("speech goes here\n")),
            (*AUDIO, "not a WAV")),
    Variant("audio-8khz", clip_file("audio.wav", _resampled), (*AUDIO, "8000 Hz")),
    # Frame counts, rates and sizes that disagree with the video.
    Variant("video-fewer-frames", clip_file("video.mp4", _reencode(lambda frames: frames[:3])),
            (*META, "field num_frames", "video.mp4 has 3 frames")),
    Variant("video-other-size", clip_file("video.mp4", _reencode(lambda frames: frames[:, :64, :48])),
            (*META, "field width", "video.mp4 is 48 wide")),
    Variant("meta-num-frames", meta(_cut_frames), (*META, "field num_frames", "video.mp4 has 5 frames")),
    Variant("meta-width", meta_set(width=100), (*META, "field width")),
    Variant("meta-height", meta_set(height=100), (*META, "field height")),
    Variant("meta-fps", meta_set(fps=30.0), (*META, "field fps")),
    Variant("meta-fps-nan", meta_set(fps=NAN), (*META, "field fps")),
    Variant("meta-fps-infinite", meta_set(fps=INF), (*META, "field fps")),
    # Annotation values: not finite, outside the frame, out of range.
    Variant("body-nan", _point("body", 2, 4, [NAN, 10.0, 1.0]), (*META, "field body[2][4]", "NaN")),
    Variant("left-hand-infinite", _point("left_hand", 1, 3, [10.0, INF, 1.0]), (*META, "field left_hand[1][3]", "NaN")),
    Variant("box-nan", _box(3, [NAN, 1.0, 5.0, 5.0]), (*META, "field objects[3][0].box", "NaN")),
    Variant("box-null", _box(3, [None, 1.0, 5.0, 5.0]), (*META, "field objects[3][0].box")),
    Variant("face-infinite", _face(0, [1.0, 1.0, INF, 5.0]), (*META, "field face[0]")),
    Variant("keypoint-outside", _point("right_hand", 4, 7, [1000.0, 10.0, 1.0]),
            (*META, "field right_hand[4][7]", "outside")),
    Variant("keypoint-negative", _point("body", 0, 0, [-5.0, 10.0, 1.0]), (*META, "field body[0][0]", "outside")),
    Variant("box-outside", _box(3, [1.0, 1.0, 500.0, 5.0]), (*META, "field objects[3][0].box", "leaves the 88x88")),
    Variant("box-inverted", _box(2, [20.0, 1.0, 5.0, 5.0]), (*META, "field objects[2][0].box", "inverted")),
    Variant("face-negative", _face(4, [-3.0, 1.0, 10.0, 10.0]), (*META, "field face[4]")),
    Variant("confidence-above-one", _point("body", 1, 1, [10.0, 10.0, 7.0]), (*META, "field body[1][1]", "confidence")),
    Variant("confidence-negative", _point("left_hand", 0, 0, [10.0, 10.0, -1.0]),
            (*META, "field left_hand[0][0]", "confidence")),
    # Structure: shapes, types, missing and unknown fields.
    Variant("body-wrong-shape", meta(lambda d: [frame.pop() for frame in d["body"]]), (*META, "field body", "shape")),
    Variant("objects-wrong-frames", meta(lambda d: d["objects"].pop()), (*META, "field objects")),
    Variant("keypoint-a-string", _point("body", 0, 1, ["ten", 10.0, 1.0]), (*META, "field body")),
    Variant("target-not-bool", meta(lambda d: d["objects"][0][0].update(target="yes")),
            (*META, "field objects[0][0]", "field target")),
    Variant("text-wrong-type", meta_set(text=42), (*META, "field text")),
    Variant("text-missing", meta(lambda d: d.pop("text")), (*META, "field text")),
    Variant("num-frames-a-string", meta_set(num_frames="5"), (*META, "field num_frames")),
    Variant("width-a-bool", meta_set(width=True), (*META, "field width")),
    Variant("unknown-meta-field", meta_set(vidoe="other.mp4"), (*META, "field vidoe", "unknown")),
    Variant("unknown-object-field", meta(lambda d: d["objects"][0][0].update(targte=True)),
            (*META, "field objects[0][0]", "field targte", "unknown")),
    Variant("duplicate-meta-key", _text('", "text": "'), (*META, "field text", "twice")),
    Variant("meta-not-an-object", meta_text(lambda text: f"[{text}]"), (*META, "JSON object")),
    Variant("meta-not-json", meta_text(lambda text: text[:-10]), (*META, "not valid JSON")),
    # Text.
    Variant("text-empty", meta_set(text=""), (*META, "field text", "empty")),
    Variant("text-blank", meta_set(text=" \n\t"), (*META, "field text", "empty")),
    Variant("text-latin-1-bytes", _text("Caf\u00e9 ", "latin-1"), (*META, "field text", "UTF-8")),
    Variant("text-lone-surrogate", _text("\\udce9"), (*META, "field text", "UTF-8")),
    # Ids and splits.
    Variant("duplicate-clip-id", manifest(lambda lines: lines[1].update(clip_id=CLIP)),
            ("manifest.jsonl:2", "field clip_id", "more than once")),
    Variant("meta-clip-id", meta_set(clip_id="someone-else"), (*META, "field clip_id", "someone-else")),
    Variant("split-unknown", first_line(split="holdout"), (*LINE, "field split", "holdout")),
    Variant("split-missing", manifest(lambda lines: lines[0].pop("split")), (*LINE, "field split")),
    Variant("meta-split-differs", meta_set(split="val"), (*META, "field split", "val")),
    Variant("meta-split-missing", meta(lambda d: d.pop("split")), (*META, "field split")),
    # The manifest's own structure.
    Variant("manifest-unknown-field", first_line(spilt="train"), ("manifest.jsonl:1", "field spilt", "unknown")),
    Variant("manifest-path-missing", manifest(lambda lines: lines[0].pop("path")), ("manifest.jsonl:1", "field path")),
    Variant("manifest-clip-id-a-number", first_line(clip_id=7), ("manifest.jsonl:1", "field clip_id")),
    Variant("manifest-line-not-json", lambda root, outside: (root / "manifest.jsonl").write_text(
        "{" + (root / "manifest.jsonl").read_text()), ("manifest.jsonl:1", "not valid JSON")),
    Variant("manifest-not-utf-8", lambda root, outside: (root / "manifest.jsonl").write_bytes(
        (root / "manifest.jsonl").read_bytes().replace(CLIP.encode(), b"synth5-\xff00000", 1)),
            ("manifest.jsonl:1", "field clip_id", "UTF-8")),
]


def test_the_corpus_is_large_and_distinct():
    assert len(CORPUS) >= 38 and len({v.name for v in CORPUS}) == len(CORPUS)


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("corpus") / "dataset", num_clips=3, seed=5)


def corrupted(clean: Path, tmp_path: Path, variant: Variant) -> Path:
    """A copy of the clean dataset at tmp_path/dataset, broken as `variant` says."""
    root, outside = tmp_path / "dataset", tmp_path / "outside"
    shutil.copytree(clean, root)
    outside.mkdir()
    shutil.copytree(clean / CLIP, outside / CLIP)
    variant.corrupt(root, outside)
    return root


def test_the_clean_dataset_passes(clean_dataset, tmp_path, capsys):
    assert main(["data", "validate", str(clean_dataset), "--report", str(tmp_path / "r.html")]) == 0, \
        capsys.readouterr().err


@pytest.mark.parametrize("variant", CORPUS, ids=lambda v: v.name)
def test_validation_refuses_and_names_the_file_and_field(clean_dataset, tmp_path, capsys, variant):
    root = corrupted(clean_dataset, tmp_path, variant)
    code = main(["data", "validate", str(root), "--report", str(tmp_path / "report" / "r.html")])
    err = capsys.readouterr().err
    assert code != 0, f"{variant.name}: validation passed"
    lines = err.strip().splitlines()
    assert any(all(name in line for name in variant.names) for line in lines), \
        f"{variant.name}: no line names all of {variant.names}:\n{err}"


@pytest.mark.parametrize("variant", [v for v in CORPUS if v.escapes], ids=lambda v: v.name)
def test_the_loader_refuses_links_and_escapes_without_validation(clean_dataset, tmp_path, variant):
    root = corrupted(clean_dataset, tmp_path, variant)
    with pytest.raises(ValueError) as refusal:
        dataset = ClipDataset(root, preset("tiny"), split="train")
        for index in range(len(dataset)):
            dataset[index]
    message = str(refusal.value)
    assert all(name in message for name in variant.names), f"{variant.name}: {message}"
