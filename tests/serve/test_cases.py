"""`interactavatar generate --cases` (the public release's test-case format) and `--endpoint`."""

import json

import pytest

from interactavatar.cli import main
from interactavatar.io.media import has_audio_stream, read_video


@pytest.fixture
def cases_file(media, tmp_path):
    """Three good cases (paths relative to the JSON file, as the release writes them) and three
    bad ones: a missing speech file, a video_id that is a path, a case without its prompt."""
    folder = media["folder"]
    good = {"mp4_img": "ref.png", "speech_path": "speech.wav", "dwpose_img": "ref.png", "obj_img": "ref.png",
            "structured_prompt": "(Right hand holds the cup)(Left hand rests)", "obj_name": "cup"}
    cases = [
        good | {"video_id": "first", "prompt": "The man lifts the red cup"},
        good | {"video_id": "missing-speech", "prompt": "x", "speech_path": "nowhere.wav"},
        good | {"video_id": "second", "prompt": "The man waves", "dwpose_mp4": "pose.mp4"},
        good | {"video_id": "../escape", "prompt": "x"},
        {k: v for k, v in good.items() if k != "prompt"} | {"video_id": "no-prompt"},
        good | {"video_id": "third", "prompt": "The man pushes the box"},
    ]
    path = folder / f"cases-{tmp_path.name}.json"
    path.write_text(json.dumps(cases))
    return path


def check_batch(out_dir, capsys, code):
    err = capsys.readouterr().err
    assert code == 1
    for label in ("case 1 (missing-speech)", "case 3 (../escape)", "case 4 (no-prompt)", "3 of 6 cases failed"):
        assert label in err, err
    for video_id in ("first", "second", "third"):
        frames, _ = read_video(out_dir / f"{video_id}.mp4")
        assert frames.shape[0] == 5 and has_audio_stream(out_dir / f"{video_id}.mp4")
        assert (out_dir / f"{video_id}_motion.mp4").is_file()
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.endswith("_motion.mp4")) == [
        "first.mp4", "second.mp4", "third.mp4"]


def test_cases_batch_locally_names_bad_cases_and_writes_the_good_ones(model_dir, cases_file, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code = main(["generate", "--model", str(model_dir), "--cases", str(cases_file), "--out-dir", str(out_dir),
                 "--steps", "2"])
    check_batch(out_dir, capsys, code)


@pytest.mark.integration
def test_cases_batch_against_the_endpoint(server, cases_file, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code = main(["generate", "--endpoint", server.url, "--cases", str(cases_file), "--out-dir", str(out_dir),
                 "--steps", "2"])
    check_batch(out_dir, capsys, code)


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_generate_against_the_endpoint(server, media, tmp_path, capsys, protocol):
    files, out = media["files"], tmp_path / "clip.mp4"
    assert main(["generate", "--endpoint", server.url, "--protocol", protocol, "--image", str(files["image"]),
                 "--audio", str(files["audio"]), "--text", "The man lifts the red cup", "-o", str(out),
                 "--steps", "2"]) == 0
    assert has_audio_stream(out) and read_video(tmp_path / "clip_motion.mp4")[0].shape[0] == 5
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["num_frames"] == 5
    # A refusal from the server is an error naming the field, exit status 2.
    assert main(["generate", "--endpoint", server.url, "--image", str(files["audio"]), "--audio",
                 str(files["audio"]), "--text", "x", "-o", str(tmp_path / "bad.mp4")]) == 2
    assert "image:" in capsys.readouterr().err and not (tmp_path / "bad.mp4").exists()


def test_generate_needs_a_model_or_an_endpoint(media, tmp_path, capsys):
    files = media["files"]
    assert main(["generate", "--image", str(files["image"]), "--audio", str(files["audio"]), "--text", "x",
                 "-o", str(tmp_path / "x.mp4")]) == 2
    assert "--model" in capsys.readouterr().err


def test_object_and_pose_images_reach_the_pipeline(model_dir, media, tmp_path, monkeypatch):
    """--object-image and --pose-image (the release's obj_img and dwpose_img) reach the pipeline as
    images; without them it gets none (a white object image, the pose drawn by PIM)."""
    import numpy as np
    from PIL import Image

    from interactavatar.inference.pipeline import InteractAvatarPipeline

    seen = []
    original = InteractAvatarPipeline.__call__

    def spy(self, image, text, audio, **kwargs):
        seen.append({name: None if kwargs.get(name) is None else kwargs[name].shape
                     for name in ("object_image", "pose_image")})
        return original(self, image, text, audio, **kwargs)

    monkeypatch.setattr(InteractAvatarPipeline, "__call__", spy)
    Image.fromarray(np.full((30, 20, 3), 90, np.uint8)).save(tmp_path / "object.png")
    Image.fromarray(np.zeros((40, 44, 3), np.uint8)).save(tmp_path / "pose.png")
    files = media["files"]
    common = ["generate", "--model", str(model_dir), "--image", str(files["image"]), "--audio", str(files["audio"]),
              "--text", "The man lifts the cup", "--steps", "2"]
    assert main([*common, "-o", str(tmp_path / "with.mp4"), "--object-image", str(tmp_path / "object.png"),
                 "--pose-image", str(tmp_path / "pose.png")]) == 0
    assert main([*common, "-o", str(tmp_path / "without.mp4")]) == 0
    # The object image keeps its alpha (a cut-out is pasted on white by it, as the release does).
    assert seen == [{"object_image": (30, 20, 4), "pose_image": (40, 44, 3)}, {"object_image": None, "pose_image": None}]
    assert read_video(tmp_path / "with.mp4")[0].shape[0] == 5
