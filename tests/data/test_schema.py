import json

import numpy as np
import pytest

from interactavatar.data.schema import (
    BODY_KEYPOINTS,
    HAND_KEYPOINTS,
    META_FIELDS,
    OBJECT_FIELDS,
    ClipMeta,
    ManifestEntry,
    ObjectBox,
    UnsafePathError,
    read_clip,
    read_manifest,
    read_meta,
    write_manifest,
    write_meta,
)
from interactavatar.io.files import atomic_path


def _meta(frames: int = 2) -> ClipMeta:
    return ClipMeta(
        clip_id="c1", text="The man grasps the red cup on the left with his right hand.", fps=25.0,
        num_frames=frames, width=64, height=48,
        body=np.ones((frames, 18, 3)), left_hand=np.ones((frames, 21, 3)), right_hand=np.ones((frames, 21, 3)),
        face=np.tile([1.0, 2.0, 10.0, 12.0], (frames, 1)),
        objects=[[ObjectBox("red cup", 1, 2, 3, 4, target=True), ObjectBox("blue box", 5, 6, 7, 8)]] * frames,
        split="train", extra={"action": "grasp"},
    )


def test_keypoint_orders_are_openpose():
    assert len(BODY_KEYPOINTS) == 18 and BODY_KEYPOINTS[:2] == ("nose", "neck")
    assert BODY_KEYPOINTS[14:] == ("right_eye", "left_eye", "right_ear", "left_ear")
    assert len(HAND_KEYPOINTS) == 21 and HAND_KEYPOINTS[0] == "wrist" and HAND_KEYPOINTS[20] == "little_4"


def test_meta_round_trip(tmp_path):
    meta = _meta()
    write_meta(tmp_path, meta)
    back = read_meta(tmp_path)
    assert back.to_dict() == meta.to_dict()
    np.testing.assert_array_equal(back.target_boxes(), [[1, 2, 3, 4], [1, 2, 3, 4]])
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_manifest_round_trip(tmp_path):
    entries = [ManifestEntry("a", "a", "train"), ManifestEntry("b", "sub/b", None)]
    write_manifest(tmp_path, entries)
    assert read_manifest(tmp_path) == entries


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("text"), "field text is missing"),
    (lambda d: d.update(fps="fast"), "field fps: expected int or float"),
    (lambda d: d.update(body=[[[0, 0, 0]] * 17] * 2), "field body: shape [2, 17, 3]"),
    (lambda d: d.update(objects=[[]]), "field objects: 1 frames"),
    (lambda d: d["objects"][1][0].pop("label"), "objects[1][0]: field label is missing"),
])
def test_bad_meta_names_file_and_field(tmp_path, change, message):
    data = _meta().to_dict()
    change(data)
    (tmp_path / "meta.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="meta.json") as err:
        read_meta(tmp_path)
    assert message in str(err.value)


def test_manifest_errors_name_the_line(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"clip_id": "a", "path": "a"}\n{"clip_id": 3, "path": "b"}\n')
    with pytest.raises(ValueError, match=r"manifest.jsonl:2: field clip_id"):
        read_manifest(tmp_path)
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_manifest(tmp_path / "missing")


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_audio_defaults_to_the_wav_and_null_means_the_video_track():
    data = _meta().to_dict()
    del data["audio"]
    assert ClipMeta.from_dict(data).audio == "audio.wav"
    data["audio"] = None
    assert ClipMeta.from_dict(data).audio is None


def test_known_fields_are_the_ones_written():
    data = _meta().to_dict()
    assert tuple(data) == META_FIELDS and tuple(data["objects"][0][0]) == OBJECT_FIELDS


def test_extra_is_free_form_and_target_is_a_flag():
    data = _meta().to_dict()
    data["extra"] = {"anything": {"nested": [1, "two"]}}
    del data["objects"][0][1]["target"]
    meta = ClipMeta.from_dict(data)
    assert meta.extra["anything"]["nested"] == [1, "two"] and not meta.objects[0][1].target


@pytest.mark.parametrize("path, problem", [
    ("", "names nothing"), (".", "names nothing"), ("/data/c1", "is absolute"),
    ("../c1", "climbs out"), ("sub/../../c1", "climbs out"), ("sub/../c1", "climbs out"), ("c\0", "NUL"),
])
def test_manifest_paths_stay_below_the_dataset(tmp_path, path, problem):
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"clip_id": "c1", "path": path, "split": "train"}) + "\n")
    with pytest.raises(UnsafePathError, match=r"manifest.jsonl:1: clip 'c1': field path: ") as err:
        read_manifest(tmp_path)
    assert problem in str(err.value)


def test_clip_files_resolve_below_the_dataset_whose_own_root_may_be_a_link(tmp_path):
    """The dataset root is the caller's to choose (a mount, a checkout through a link); below it,
    paths like sub/./c1 are fine and lead to the clip's files."""
    write_meta(tmp_path / "real" / "sub" / "c1", _meta())
    write_manifest(tmp_path / "real", [ManifestEntry("c1", "sub/./c1", "train")])
    (tmp_path / "root").symlink_to(tmp_path / "real")
    root = tmp_path / "root"
    meta, files = read_clip(root, read_manifest(root)[0])
    assert meta.clip_id == "c1" and files.folder == root / "sub" / "c1"
    assert (files.meta, files.video, files.speech) == (files.folder / "meta.json", files.folder / "video.mp4",
                                                       files.folder / "audio.wav")


def test_manifest_lines_end_at_newlines_only(tmp_path):
    """JSON Lines: CRLF endings read, and a clip id holding U+2028 is not split in two."""
    lines = [json.dumps({"clip_id": "a\u2028b", "path": "a", "split": "train"}, ensure_ascii=False),
             json.dumps({"clip_id": "c", "path": "c", "split": "val"})]
    (tmp_path / "manifest.jsonl").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    entries = read_manifest(tmp_path)
    assert [(e.clip_id, e.line) for e in entries] == [("a\u2028b", 1), ("c", 2)]
