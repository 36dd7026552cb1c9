"""The model directory and generation, end to end through the CLI on the tiny preset."""

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from interactavatar.cli import main
from interactavatar.config import preset
from interactavatar.inference.pipeline import InteractAvatarPipeline, face_mask_from_box
from interactavatar.io.media import encode_video, has_audio_stream, read_video, write_video
from interactavatar.model.bundle import build_bundle, load_bundle, save_bundle


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
    rate = 22050
    t = np.arange(int(rate * 0.5)) / rate
    soundfile.write(tmp_path / "speech.wav", 0.3 * np.sin(2 * np.pi * 180 * t), rate)
    return tmp_path


def test_generate_writes_a_playable_video_with_audio_and_its_motion(model_dir, inputs):
    out = inputs / "out.mp4"
    code = main(["generate", "--model", str(model_dir), "--image", str(inputs / "ref.png"), "--audio",
                 str(inputs / "speech.wav"), "--text", "The man lifts the red cup", "-o", str(out), "--seed", "1"])
    assert code == 0
    frames, fps = read_video(out)
    cfg = preset("tiny")
    assert frames.shape == (cfg.num_frames, *cfg.video_size, 3) and fps == 25
    assert has_audio_stream(out)
    motion, _ = read_video(inputs / "out_motion.mp4")
    assert motion.shape == (cfg.num_frames, *cfg.motion_size, 3)


def test_pose_driven_generation_uses_the_given_motion(model_dir, inputs):
    cfg = preset("tiny")
    pose = np.zeros((9, *cfg.motion_size, 3), dtype=np.uint8)
    pose[:, 8:20, 10:20] = 255
    write_video(inputs / "pose.mp4", pose, 25)
    out = inputs / "posed.mp4"
    assert main(["generate", "--model", str(model_dir), "--image", str(inputs / "ref.png"), "--audio",
                 str(inputs / "speech.wav"), "--text", "wave", "-o", str(out), "--mode", "pose",
                 "--pose-video", str(inputs / "pose.mp4")]) == 0
    assert read_video(out)[0].shape[0] == cfg.num_frames


def test_bad_inputs_are_named(model_dir, inputs, capsys):
    (inputs / "not_an_image.png").write_text("hello")
    code = main(["generate", "--model", str(model_dir), "--image", str(inputs / "not_an_image.png"), "--audio",
                 str(inputs / "speech.wav"), "--text", "x", "-o", str(inputs / "x.mp4")])
    assert code == 2 and "not_an_image.png" in capsys.readouterr().err
    code = main(["generate", "--model", str(inputs), "--image", str(inputs / "ref.png"), "--audio",
                 str(inputs / "speech.wav"), "--text", "x", "-o", str(inputs / "x.mp4")])
    assert code == 2 and "config.yaml" in capsys.readouterr().err
    assert not (inputs / "x.mp4").exists()


def test_pipeline_is_deterministic(model_dir, inputs):
    pipeline = InteractAvatarPipeline.from_pretrained(model_dir)
    image = np.asarray(Image.open(inputs / "ref.png"))
    audio = np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    a = pipeline(image, "push the box", audio, seed=5, steps=2)
    b = pipeline(image, "push the box", audio, seed=5, steps=2)
    assert np.array_equal(a.video, b.video) and np.array_equal(a.motion, b.motion)


def test_model_directory_round_trip_and_atomic_replace(tmp_path):
    bundle = build_bundle(preset("tiny"), seed=3)
    save_bundle(bundle, tmp_path / "m")
    loaded = load_bundle(tmp_path / "m")
    for name, tensor in bundle.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name

    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    broken = build_bundle(preset("tiny"), seed=4)
    broken.vae.save_pretrained = lambda directory: (_ for _ in ()).throw(OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        save_bundle(broken, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_face_box_maps_onto_the_token_grid():
    mask = face_mask_from_box((32, 0, 64, 16), (64, 64), (64, 64), (4, 4), latent_frames=2)
    assert mask.shape == (1, 2, 4, 4)
    assert mask[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    # a 128x64 image is scaled by 1 and centre-cropped 32 px from the top
    cropped = face_mask_from_box((0, 32, 16, 48), (128, 64), (64, 64), (4, 4), latent_frames=1)
    assert cropped[0, 0, 0].tolist() == [1, 0, 0, 0] and cropped.sum() == 1
    assert face_mask_from_box(None, (64, 64), (64, 64), (4, 4), 1).sum() == 16


def test_result_encodes_in_memory_as_save_writes(model_dir, inputs, tmp_path):
    pipeline = InteractAvatarPipeline.from_pretrained(model_dir)
    result = pipeline(np.asarray(Image.open(inputs / "ref.png")), "wave", np.zeros(8000, np.float32), steps=2)
    video, motion = result.to_mp4_bytes()
    (tmp_path / "video.mp4").write_bytes(video)
    (tmp_path / "motion.mp4").write_bytes(motion)
    result.save(tmp_path / "saved.mp4")  # the quick encode runs threads: the same up to x264's jitter
    decoded, saved = (read_video(tmp_path / name)[0].astype(int) for name in ("video.mp4", "saved.mp4"))
    assert decoded.shape == result.video.shape and np.abs(decoded - saved).mean() < 2
    assert has_audio_stream(tmp_path / "video.mp4") and not has_audio_stream(tmp_path / "motion.mp4")
    assert read_video(tmp_path / "motion.mp4")[0].shape == result.motion.shape
    assert result.to_mp4_bytes(with_motion=False)[1] is None
    # One encoder: in memory and on disk give the same bytes (the exact encoding is bit-exact).
    write_video(tmp_path / "exact.mp4", result.video, 25, exact=True)
    assert encode_video(result.video, 25, exact=True) == (tmp_path / "exact.mp4").read_bytes()
