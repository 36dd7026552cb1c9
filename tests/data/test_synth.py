import hashlib
import re

import numpy as np
import pytest
import soundfile

from interactavatar.config import preset
from interactavatar.data.schema import BODY_KEYPOINTS, read_manifest, read_meta
from interactavatar.data.synth import CATEGORIES, COLORS, SynthSpec, synthesize
from interactavatar.io.media import probe_video, read_video


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path, demo_dataset):
    again = tmp_path / "again"
    synthesize(again, num_clips=4, seed=7)
    first, second = _digests(demo_dataset), _digests(again)
    assert first.keys() == second.keys()
    assert first == second, "meta.json, audio.wav and video.mp4 must be byte-identical"
    for entry in read_manifest(again):
        np.testing.assert_array_equal(read_video(again / entry.path / "video.mp4")[0],
                                      read_video(demo_dataset / entry.path / "video.mp4")[0])


def test_other_seed_differs_and_earlier_clips_stay(tmp_path, demo_dataset):
    synthesize(tmp_path / "other", num_clips=2, seed=8)
    assert read_meta(tmp_path / "other" / "synth8-000000").text != read_meta(demo_dataset / "synth7-000000").text
    synthesize(tmp_path / "fewer", num_clips=2, seed=7)
    fewer, full = _digests(tmp_path / "fewer"), _digests(demo_dataset)
    assert all(full[name] == digest for name, digest in fewer.items() if name != "manifest.jsonl")


def test_defaults_follow_demo_preset():
    config, spec = preset("demo"), SynthSpec()
    assert (spec.height, spec.width) == config.video_size
    assert spec.num_frames == config.num_frames and spec.fps == config.audio.fps
    assert spec.sample_rate == config.audio.sample_rate


def test_clip_contents_match_meta(demo_dataset):
    entries = read_manifest(demo_dataset)
    assert [e.split for e in entries] == ["train", "val", "test", "train"]
    for entry in entries:
        meta = read_meta(demo_dataset / entry.path)
        info = probe_video(demo_dataset / entry.path / "video.mp4")
        assert (info.num_frames, info.fps, info.width, info.height) == (17, 25.0, 176, 176)
        samples, rate = soundfile.read(demo_dataset / entry.path / "audio.wav")
        assert rate == 16000 and samples.ndim == 1 and len(samples) == 17 * 640
        assert meta.split == entry.split and meta.clip_id == entry.clip_id
        assert np.isfinite(meta.body).all() and np.isfinite(meta.right_hand).all()
        visible = meta.body[..., 2] > 0
        assert (meta.body[visible][:, :2] >= 0).all() and (meta.body[visible][:, 0] < 176).all()
        assert (meta.body[visible][:, 1] < 176).all()
        boxes = meta.target_boxes()
        assert np.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= 176).all()


def test_sentence_names_the_target_unambiguously(tmp_path):
    root = tmp_path / "many"
    synthesize(root, num_clips=30, seed=3, spec=SynthSpec(width=64, height=64, num_frames=5))
    pattern = re.compile(r"^The (woman|man) (reaches for|grasps|lifts|points at|pushes) the (\w+) (\w+) "
                         r"(on the left|in the middle|on the right) with (her|his) (left|right) hand\.$")
    seen_actions, seen_counts = set(), set()
    for entry in read_manifest(root):
        meta = read_meta(root / entry.path)
        match = pattern.match(meta.text)
        assert match, meta.text
        color, category, hand = match.group(3), match.group(4), match.group(7)
        assert color in COLORS and category in CATEGORIES and hand == meta.extra["hand"]
        labels = [box.label for box in meta.objects[0]]
        assert len({label.split()[0] for label in labels}) == len(labels), "colours are distinct"
        assert [box.label for box in meta.objects[0] if box.target] == [f"{color} {category}"]
        seen_actions.add(meta.extra["action"])
        seen_counts.add(len(labels))
    assert seen_actions == {"reach", "grasp", "lift", "point", "push"} and seen_counts == {1, 2, 3}


def test_the_named_hand_goes_to_the_named_object(tmp_path):
    root = tmp_path / "reach"
    synthesize(root, num_clips=20, seed=11)
    for entry in read_manifest(root):
        meta = read_meta(root / entry.path)
        box = meta.target_boxes()
        centre = (box[:, :2] + box[:, 2:]) / 2
        acting = meta.extra["hand"]
        other = "left" if acting == "right" else "right"
        hand = meta.body[:, BODY_KEYPOINTS.index(f"{acting}_wrist"), :2]
        idle = meta.body[:, BODY_KEYPOINTS.index(f"{other}_wrist"), :2]
        assert np.linalg.norm(hand[-1] - hand[0]) > 0.05 * meta.width, meta.text
        assert np.linalg.norm(idle[-1] - idle[0]) < 2.0, "the other hand stays put"
        index_tip = (meta.right_hand if acting == "right" else meta.left_hand)[-1, 8, :2]
        centres = [(np.array([b.x0, b.y0]) + [b.x1, b.y1]) / 2 for b in meta.objects[-1]]
        nearest = int(np.argmin([np.linalg.norm(index_tip - c) for c in centres]))
        assert meta.objects[-1][nearest].target, meta.text
        if meta.extra["action"] != "point":
            assert np.linalg.norm(hand[-1] - centre[-1]) < np.linalg.norm(hand[0] - centre[0]), meta.text


def test_mouth_follows_the_speech(demo_dataset):
    meta = read_meta(demo_dataset / "synth7-000000")
    samples, _ = soundfile.read(demo_dataset / "synth7-000000" / "audio.wav")
    energy = np.array([np.sqrt(np.mean(samples[f * 640:(f + 1) * 640] ** 2)) for f in range(17)])
    mouth_height = meta.face[:, 1]  # the head bobs down a little as the mouth opens
    assert np.corrcoef(energy, mouth_height)[0, 1] > 0.5


@pytest.mark.parametrize("kwargs", [dict(width=63), dict(num_frames=6), dict(width=16, height=16)])
def test_bad_sizes_are_refused(kwargs):
    with pytest.raises(ValueError, match="synth"):
        SynthSpec(**kwargs)


def test_synth_command(tmp_path, capsys):
    from interactavatar.cli import main

    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--num-clips", "2", "--seed", "4", "--width", "64",
                 "--height", "48", "--num-frames", "5"]) == 0
    assert "wrote 2 clips" in capsys.readouterr().out
    assert probe_video(out / "synth4-000001" / "video.mp4").num_frames == 5
    assert main(["data", "synth", "--out", str(out), "--num-frames", "6"]) == 2
    assert "num_frames=6 is not 1+4k" in capsys.readouterr().err
