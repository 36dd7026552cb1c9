import json
import shutil

import numpy as np
import pytest
import soundfile
from PIL import Image

from interactavatar.cli import main
from interactavatar.data.ingest import ingest_cases, ingest_videos
from interactavatar.data.render import render_clip
from interactavatar.data.schema import UnsafePathError, read_manifest, read_meta
from interactavatar.data.validation import validate
from interactavatar.io.media import read_video, write_video


@pytest.fixture()
def video_folder(demo_dataset, tmp_path):
    """The demo clips as a data engineer would bring them: NAME.mp4 + NAME.json (+ NAME.wav)."""
    folder = tmp_path / "raw"
    folder.mkdir()
    for entry in read_manifest(demo_dataset)[:3]:
        clip = demo_dataset / entry.path
        name = f"take {entry.clip_id}"
        shutil.copy(clip / "video.mp4", folder / f"{name}.mp4")
        shutil.copy(clip / "audio.wav", folder / f"{name}.wav")
        meta = json.loads((clip / "meta.json").read_text())
        sidecar = {k: meta[k] for k in ("text", "body", "left_hand", "right_hand", "face", "objects")}
        if entry.split == "val":
            sidecar["split"] = "val"
            del sidecar["left_hand"], sidecar["objects"]  # not annotated
        (folder / f"{name}.json").write_text(json.dumps(sidecar))
    return folder


def test_ingest_video_folder(video_folder, demo_dataset, tmp_path):
    out = tmp_path / "dataset"
    entries = ingest_videos(video_folder, out)
    assert [e.clip_id for e in entries] == ["take-synth7-000000", "take-synth7-000001", "take-synth7-000002"]
    assert read_manifest(out) == entries
    for entry, original in zip(entries, read_manifest(demo_dataset), strict=False):
        meta, source = read_meta(out / entry.path), read_meta(demo_dataset / original.path)
        assert (meta.num_frames, meta.fps, meta.width, meta.height) == (17, 25.0, 176, 176)
        assert meta.text == source.text
        np.testing.assert_array_equal(meta.body, source.body)
        assert (out / entry.path / "video.mp4").read_bytes() == (demo_dataset / original.path / "video.mp4").read_bytes()
        assert soundfile.info(out / entry.path / "audio.wav").samplerate == 16000
    unannotated = read_meta(out / "take-synth7-000001")
    assert unannotated.split == "val" and not unannotated.left_hand.any() and unannotated.objects[0] == []
    with pytest.raises(ValueError, match="already in the dataset"):
        ingest_videos(video_folder, out)


def test_ingest_refuses_to_write_through_a_link(video_folder, tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "take-synth7-000000").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match=r"clip_id 'take-synth7-000000': .* is a symbolic link"):
        ingest_videos(video_folder, out)
    assert not any((tmp_path / "elsewhere").iterdir())


def test_ingest_video_folder_errors_name_the_file(video_folder, tmp_path):
    (video_folder / "take synth7-000000.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"take synth7-000000.mp4: no sidecar"):
        ingest_videos(video_folder, tmp_path / "a")
    (video_folder / "take synth7-000001.json").write_text(json.dumps({"text": "x", "body": [[0, 0]]}))
    shutil.rmtree(tmp_path / "a", ignore_errors=True)
    (video_folder / "take synth7-000000.mp4").unlink()
    with pytest.raises(ValueError, match=r"take synth7-000001.json: field body: shape"):
        ingest_videos(video_folder, tmp_path / "b")
    assert not (tmp_path / "b" / "manifest.jsonl").exists()


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_failed_ingest_leaves_no_partial_folder(video_folder, tmp_path):
    """The second video's sidecar is bad: its clip fails after the first clip was written. A new
    dataset is then not there at all, an extended one is as it was, and no staging folder is left."""
    (video_folder / "take synth7-000001.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"take synth7-000001.json: not valid JSON"):
        ingest_videos(video_folder, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]

    existing, more = tmp_path / "existing", tmp_path / "more"
    more.mkdir()
    for suffix in (".mp4", ".json", ".wav"):  # clip 2 comes later, with a video that has no sidecar
        (video_folder / f"take synth7-000002{suffix}").rename(more / f"take synth7-000002{suffix}")
    shutil.copy(more / "take synth7-000002.mp4", more / "take synth7-000009.mp4")
    (video_folder / "take synth7-000001.json").unlink()
    (video_folder / "take synth7-000001.mp4").unlink()
    ingest_videos(video_folder, existing)
    before = _tree(existing)
    with pytest.raises(FileNotFoundError, match=r"take synth7-000009.mp4: no sidecar"):
        ingest_videos(more, existing)
    assert _tree(existing) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "more", "raw"]


@pytest.fixture()
def release_cases(demo_dataset, tmp_path):
    """Two test cases in the release's format, made from demo clips: a pose image at 256 px
    (one case) and a pose video (the other), speech at 22.05 kHz stereo."""
    folder = tmp_path / "cases"
    (folder / "assets").mkdir(parents=True)
    cases = []
    for index, entry in enumerate(read_manifest(demo_dataset)[:2]):
        clip = demo_dataset / entry.path
        meta = read_meta(clip)
        frames, _ = read_video(clip / "video.mp4")
        Image.fromarray(frames[0]).save(folder / "assets" / f"ref{index}.png")
        poses = render_clip(meta.body, meta.left_hand, meta.right_hand, meta.target_boxes(), (256, 256),
                            (meta.height, meta.width))
        samples, rate = soundfile.read(clip / "audio.wav")
        stereo = np.stack([samples, samples], 1)
        soundfile.write(folder / "assets" / f"speech{index}.wav", np.interp(
            np.arange(0, len(samples), rate / 22050), np.arange(len(samples)), samples)[:, None].repeat(2, 1), 22050)
        del stereo
        case = {"video_id": f"case/{index}", "prompt": meta.text, "mp4_img": f"assets/ref{index}.png",
                "speech_path": f"assets/speech{index}.wav", "obj_name": meta.extra["target"],
                "structured_prompt": meta.extra["structured_prompt"], "obj_img": "assets/none.png"}
        if index == 0:
            Image.fromarray(poses[0]).save(folder / "assets" / "pose0.png")
            case["dwpose_img"] = "assets/pose0.png"
        else:
            write_video(folder / "assets" / "pose1.mp4", poses, 25.0, exact=True, crf=0)
            case["dwpose_mp4"] = "assets/pose1.mp4"
        cases.append(case)
    (folder / "cases.json").write_text(json.dumps(cases))
    return folder / "cases.json"


def test_ingest_release_cases(release_cases, demo_dataset, tmp_path, capsys):
    out = tmp_path / "cases-dataset"
    assert main(["data", "ingest", "--cases", str(release_cases), "--out", str(out), "--num-frames", "13"]) == 0
    entries = read_manifest(out)
    assert [e.clip_id for e in entries] == ["case-0", "case-1"] and {e.split for e in entries} == {"test"}
    for entry, original in zip(entries, read_manifest(demo_dataset), strict=False):
        meta, source = read_meta(out / entry.path), read_meta(demo_dataset / original.path)
        assert meta.num_frames == 13 and meta.extra["reference_only"] and meta.text == source.text
        assert meta.extra["structured_prompt"].startswith("(")
        frames = 1 if entry.clip_id == "case-0" else 13
        visible = source.body[:frames, :, 2] > 0
        # Read back from a 256 px pose image, scaled to the 176 px reference: within a pixel.
        assert np.abs(meta.body[:frames][visible][:, :2] - source.body[:frames][visible][:, :2]).max() <= 1.0
        assert meta.objects[0][0].label == source.extra["target"] and meta.objects[0][0].target
        np.testing.assert_allclose(meta.objects[0][0].as_array(), source.target_boxes()[0], atol=1.5)
        x0, y0, x1, y1 = meta.face[0]
        nose = source.body[0, 0, :2]
        assert x0 < nose[0] < x1 and y0 < nose[1] < y1
    report = validate(out, required_splits=("test",))
    assert report.success, report.failures


def test_ingest_release_case_errors(release_cases, tmp_path):
    cases = json.loads(release_cases.read_text())
    cases[1]["speech_path"] = "assets/missing.wav"
    release_cases.write_text(json.dumps(cases))
    with pytest.raises(FileNotFoundError, match=r"cases.json\[1\]: field speech_path: no file"):
        ingest_cases(release_cases, tmp_path / "out")
    del cases[0]["prompt"]
    release_cases.write_text(json.dumps(cases))
    with pytest.raises(ValueError, match=r"cases.json\[0\]: field prompt"):
        ingest_cases(release_cases, tmp_path / "out")


def _mux_with_speech(path, frames, speech, rate):
    """An mp4 with H.264 video and an AAC speech track, as cameras write them."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        chunk = av.AudioFrame.from_ndarray(speech[None].astype(np.float32), format="fltp", layout="mono")
        chunk.sample_rate = rate
        container.mux(audio.encode(chunk))
        container.mux(audio.encode())
        container.mux(video.encode())


def test_speech_from_the_video_track(demo_dataset, tmp_path):
    clip = demo_dataset / "synth7-000000"
    frames, _ = read_video(clip / "video.mp4")
    speech, rate = soundfile.read(clip / "audio.wav", dtype="float32")
    folder = tmp_path / "raw"
    folder.mkdir()
    _mux_with_speech(folder / "talk.mp4", frames, np.interp(np.arange(0, len(speech), 0.5), np.arange(len(speech)),
                                                            speech), 32000)
    (folder / "talk.json").write_text(json.dumps({"text": "hello", "split": "train"}))
    ingest_videos(folder, tmp_path / "out")
    ingested, rate_out = soundfile.read(tmp_path / "out" / "talk" / "audio.wav", dtype="float32")
    assert rate_out == 16000
    # AAC adds priming and padding: the length is right to within a couple of AAC frames.
    assert abs(len(ingested) - len(speech)) <= 2 * 1024
    report = validate(tmp_path / "out")
    assert report.success, report.failures
