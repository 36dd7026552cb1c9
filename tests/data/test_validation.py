import hashlib
import json

import numpy as np
import pytest
import soundfile
from helpers.datasets import make_dataset

from interactavatar.cli import main
from interactavatar.data.schema import read_manifest, read_meta, write_manifest, write_meta


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(path.relative_to(root).as_posix().encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _corrupt(root):
    """Break clips 0..10 one way each; clip 11 stays good. Returns {clip folder: expected words}."""
    entries = read_manifest(root)
    clip = [root / e.path for e in entries]
    expected = {}

    video = clip[0] / "video.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    expected[entries[0].path] = "video does not decode"

    meta = read_meta(clip[1])
    meta.fps = 30.0
    write_meta(clip[1], meta)
    expected[entries[1].path] = "meta.json: field fps: 30.0, but video.mp4 runs at 25.0 fps"

    (clip[2] / "audio.wav").unlink()
    expected[entries[2].path] = "meta.json: field audio: audio.wav: [Errno 2] No such file"

    samples, rate = soundfile.read(clip[3] / "audio.wav")
    soundfile.write(clip[3] / "audio.wav", samples[: len(samples) // 2], rate)
    expected[entries[3].path] = "field audio: audio.wav's length differs from video.mp4's by -2.50 frames"

    meta = read_meta(clip[4])
    meta.body[2, 4, 0] = np.nan
    write_meta(clip[4], meta)
    expected[entries[4].path] = "meta.json: field body[2][4]: NaN or infinite (1 such in the clip)"

    meta = read_meta(clip[5])
    meta.objects[3][0].x1 = 500.0
    write_meta(clip[5], meta)
    expected[entries[5].path] = "meta.json: field objects[3][0].box: box leaves the 88x88 frame"

    meta = read_meta(clip[6])
    meta.text = "   "
    write_meta(clip[6], meta)
    expected[entries[6].path] = "meta.json: field text is empty"

    entries[7].clip_id = entries[8].clip_id
    expected[entries[7].path] = f"field clip_id: {entries[8].clip_id!r} appears more than once"
    expected[entries[8].path] = f"field clip_id: {entries[8].clip_id!r} appears more than once"

    entries[9].split = None
    expected[entries[9].path] = "manifest.jsonl:10: field split is missing"

    meta = read_meta(clip[10])
    meta.num_frames = 4
    meta.body, meta.left_hand, meta.right_hand = meta.body[:4], meta.left_hand[:4], meta.right_hand[:4]
    meta.face, meta.objects = meta.face[:4], meta.objects[:4]
    write_meta(clip[10], meta)
    expected[entries[10].path] = "meta.json: field num_frames: 4, but video.mp4 has 5 frames"

    write_manifest(root, entries)
    return expected


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("validation") / "dataset", num_clips=12, seed=5)


def test_good_dataset_passes(demo_dataset, tmp_path, capsys):
    before = _tree_digest(demo_dataset)
    code = main(["data", "validate", str(demo_dataset), "--report", str(tmp_path / "report.html")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "validation passed" in captured.out and captured.err == ""
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["success"] and summary["num_clips"] == 4 and summary["failures"] == []
    assert len(summary["checks"]) >= 15 and all(c["success"] for c in summary["checks"])
    assert "clip_dataset" in (tmp_path / "report.html").read_text()
    assert _tree_digest(demo_dataset) == before


def test_every_corruption_is_caught_and_named(small_dataset, tmp_path, capsys):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(small_dataset, root)
    expected = _corrupt(root)
    before = _tree_digest(root)
    code = main(["data", "validate", str(root), "--report", str(tmp_path / "out" / "report.html")])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    for path, words in expected.items():
        named = [line for line in lines if line.startswith(f"{root / path} (")]
        assert any(words in line for line in named), f"{path}: expected {words!r} in {named}"
    good = read_manifest(root)[11].path
    assert not any(line.startswith(f"{root / good} (") for line in lines)
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    assert not summary["success"] and {f["path"] for f in summary["failures"]} == set(expected)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "video does not decode" in html
    assert _tree_digest(root) == before, "validation never modifies the dataset"


def test_dataset_without_train_split_fails(small_dataset, tmp_path, capsys):
    import shutil

    root = tmp_path / "no-train"
    shutil.copytree(small_dataset, root)
    entries = [e for e in read_manifest(root) if e.split != "train"]
    write_manifest(root, entries)
    assert main(["data", "validate", str(root), "--report", str(tmp_path / "r.html")]) == 1
    assert f"{root}: the dataset needs clips in every split of train" in capsys.readouterr().err
    assert main(["data", "validate", str(root), "--report", str(tmp_path / "r.html"), "--required-splits", ""]) == 0


def test_unreadable_meta_is_named_once(small_dataset, tmp_path, capsys):
    import shutil

    root = tmp_path / "bad-meta"
    shutil.copytree(small_dataset, root)
    first = read_manifest(root)[0].path
    (root / first / "meta.json").write_text("{not json")
    assert main(["data", "validate", str(root), "--report", str(tmp_path / "r.html")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "meta.json unreadable" in lines[0] and "not valid JSON" in lines[0]


def test_report_inside_dataset_is_refused(demo_dataset, capsys):
    assert main(["data", "validate", str(demo_dataset), "--report", str(demo_dataset / "r.html")]) == 2
    assert "never modifies" in capsys.readouterr().err
    assert main(["data", "validate", str(demo_dataset / "missing")]) == 2
