"""The dataset hash a model is tagged with covers exactly the bytes training reads: any change to
one of them changes it, files nothing reads do not, and the loader reads no file outside the set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.datasets import make_dataset

from interactavatar.config import preset
from interactavatar.data import dataset as dataset_module
from interactavatar.data.dataset import ClipDataset
from interactavatar.data.schema import UnsafePathError, dataset_files, read_manifest, read_meta, write_meta
from interactavatar.data.versioning import dataset_hash

VAL_CLIP = "synth3-000001"  # not a train clip: the hash is the dataset's, whatever split a stage reads


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("hash") / "dataset", num_clips=3, seed=3)


@pytest.fixture()
def copy(clean: Path, tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    shutil.copytree(clean, root)
    return root


def _change_a_byte(path: Path) -> None:
    """One byte more or different: JSON gains a space it does not mind, media a flipped last bit."""
    data = path.read_bytes()
    if path.suffix in (".json", ".jsonl"):
        path.write_bytes(data.replace(b'": ', b'":  ', 1))
    else:
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


def test_the_hash_depends_on_content_not_location(clean, copy):
    assert dataset_hash(copy) == dataset_hash(clean) == dataset_hash(clean)
    assert len(dataset_hash(clean)) == 64


@pytest.mark.parametrize("name", ["manifest.jsonl", f"{VAL_CLIP}/meta.json", f"{VAL_CLIP}/video.mp4",
                                  f"{VAL_CLIP}/audio.wav"])
def test_a_byte_training_reads_changes_the_hash(clean, copy, name):
    _change_a_byte(copy / name)
    assert dataset_hash(copy) != dataset_hash(clean)


def test_the_manifest_order_counts(clean, copy):
    lines = (copy / "manifest.jsonl").read_text().splitlines(keepends=True)
    (copy / "manifest.jsonl").write_text("".join(reversed(lines)))
    assert dataset_hash(copy) != dataset_hash(clean)


def test_files_nothing_reads_do_not_count(clean, copy):
    (copy / "README.md").write_text("notes on the dataset\n")
    (copy / "reports").mkdir()
    (copy / "reports" / "data-validation.json").write_text("{}\n")
    (copy / VAL_CLIP / ".DS_Store").write_bytes(b"\0\1")
    shutil.copytree(copy / VAL_CLIP, copy / "unlisted-clip")
    assert dataset_hash(copy) == dataset_hash(clean)


def test_a_wav_the_clip_does_not_use_does_not_count(copy):
    meta = read_meta(copy / VAL_CLIP)
    meta.audio = None  # the speech is the video's own track
    write_meta(copy / VAL_CLIP, meta)
    before = dataset_hash(copy)
    _change_a_byte(copy / VAL_CLIP / "audio.wav")
    assert dataset_hash(copy) == before
    assert copy / VAL_CLIP / "audio.wav" not in dataset_files(copy)


def test_links_are_refused_as_the_loader_refuses_them(copy, tmp_path):
    video = copy / VAL_CLIP / "video.mp4"
    outside = tmp_path / "video.mp4"
    shutil.move(video, outside)
    video.symlink_to(outside)
    with pytest.raises(UnsafePathError, match=f"{VAL_CLIP}/meta.json: field video: .* is a symbolic link"):
        dataset_hash(copy)


def test_the_loader_reads_exactly_the_hashed_files(clean, monkeypatch):
    """Every file ClipDataset opens over all splits is one the hash covers, and it opens them all."""
    opened: set[Path] = set()

    def recorded(read):
        def wrapper(path, *args):
            opened.add(Path(path))
            return read(path, *args)
        return wrapper

    def read_clip(root, entry):
        meta, files = real_read_clip(root, entry)
        opened.add(files.meta)
        return meta, files

    real_read_clip = dataset_module.read_clip
    monkeypatch.setattr(dataset_module, "read_video", recorded(dataset_module.read_video))
    monkeypatch.setattr(dataset_module, "read_audio", recorded(dataset_module.read_audio))
    monkeypatch.setattr(dataset_module, "read_clip", read_clip)
    items = ClipDataset(clean, preset("tiny"), split=None)
    for index in range(len(items)):
        items[index]
    # The manifest is read by ClipDataset's constructor, through read_manifest.
    assert opened | {clean / "manifest.jsonl"} == set(dataset_files(clean))
    assert len(opened) == 3 * len(read_manifest(clean))
