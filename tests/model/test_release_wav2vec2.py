"""The audio feature path against the release's own (fixture family `wav2vec2`): -23 LUFS, the frame
count and the cut, the feature extractor's normalisation, wav2vec2's CNN features interpolated to the
video frames before the transformer, every hidden state, the stacked features and the 5-frame windows.
HF `Wav2Vec2Model` is built from the fixture's config.json (every size from there) and loaded strictly;
each recorded stage is checked through the function of ours that computes it."""

from types import SimpleNamespace

import numpy as np
import pyloudnorm
import pytest
import torch
from helpers.release import Oracle, assert_close
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from interactavatar.config import AudioConfig
from interactavatar.io.media import normalize_loudness
from interactavatar.model.audio import AudioEncoder, fit_to_frames, frame_count, window_features

pytestmark = pytest.mark.release_parity

# Every output this file checks; a fixture set recording another stage fails `test_every_stage_is_checked`.
CHECKED = {
    "loudness_normalised", "clip", "input_values", "cnn_features", "cnn_features_interp", "projected",
    "hidden_states_all", "audio_embedding", "audio_embs_windowed", "audio_embs_windowed_bf16",
    "zero_audio_embedding", "zero_audio_embs_windowed",
}


@pytest.fixture(scope="module")
def oracle():
    return Oracle("wav2vec2")


@pytest.fixture(scope="module")
def tolerance(oracle):
    tol = oracle.config["tolerance"]
    return SimpleNamespace(atol=tol["atol"], rtol=tol["rtol"], loudness=tol["loudness_normalised_atol"])


@pytest.fixture(scope="module")
def encoder(oracle):
    config = Wav2Vec2Config.from_dict(oracle.config["Wav2Vec2Config"])
    model = Wav2Vec2Model(config)
    model.load_state_dict(oracle.weights, strict=True)
    window = oracle.config["shapes"]["audio_embs_windowed"][2]
    cfg = AudioConfig(kind="random", num_layers=config.num_hidden_layers, feature_dim=config.hidden_size,
                      window=window, sample_rate=oracle.config["sampling_rate"], fps=oracle.config["fps"])
    return AudioEncoder(model, cfg)


@pytest.fixture(scope="module")
def ours(oracle, encoder):
    """Our path on the fixture's waveform, as inference/pipeline.py runs it."""
    cfg = encoder.cfg
    speech = normalize_loudness(oracle.inputs["waveform"].numpy(), cfg.sample_rate)
    frames = frame_count(len(speech) / cfg.sample_rate, cfg.fps, oracle.config["args_frame_num"])
    clip = fit_to_frames(speech, frames, cfg.fps, cfg.sample_rate)
    stages = encoder.stages(torch.from_numpy(clip), frames)
    return SimpleNamespace(speech=speech, frames=frames, clip=clip, stages=stages,
                           windows=window_features(stages.features, cfg.window)[None])


def test_every_stage_is_checked(oracle):
    assert set(oracle.outputs) <= CHECKED, f"stages no test checks: {sorted(set(oracle.outputs) - CHECKED)}"


def test_weights_load_strictly_at_the_fixture_sizes(oracle, encoder):
    """(`load_state_dict(strict=True)` in the fixture already refuses a missing or extra key.)"""
    model, config = encoder.model, oracle.config
    assert len(model.state_dict()) == len(oracle.weights) == config["num_tensors"]
    assert sum(p.numel() for p in model.state_dict().values()) == config["num_params"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, oracle.weights[key]), key


def test_loudness_is_normalised_as_the_release_does(oracle, ours, tolerance):
    waveform = oracle.inputs["waveform"]
    assert waveform.dtype == torch.float32 and ours.speech.dtype == np.float32
    assert_close("loudness_normalised", torch.from_numpy(ours.speech), oracle.outputs["loudness_normalised"],
                 atol=tolerance.loudness, rtol=0)


def test_loudness_rule_is_the_releases(oracle):
    """Unchanged only when the measured loudness is beyond +-100 (silence: -inf); quiet speech in
    long silence is still brought to the target, and peaks over 1 are kept, not clipped."""
    rate, target = oracle.config["sampling_rate"], oracle.config["lufs_target"]
    meter = pyloudnorm.Meter(rate)
    silence = np.zeros(len(oracle.inputs["waveform"]), dtype=np.float32)
    np.testing.assert_array_equal(normalize_loudness(silence, rate), silence)
    faint = oracle.inputs["waveform"].numpy() * np.float32(1e-6)  # every block under the -70 LUFS gate
    assert abs(meter.integrated_loudness(faint)) > 100
    np.testing.assert_array_equal(normalize_loudness(faint, rate), faint)

    seconds = np.arange(10 * rate) / rate
    burst = np.where(seconds < 0.5, 5.7e-4 * np.sin(2 * np.pi * 1000 * seconds), 0).astype(np.float32)
    spiky = (0.01 * np.random.default_rng(0).standard_normal(2 * rate)).astype(np.float32)
    spiky[rate] = 0.9
    for waveform in (burst, spiky):  # RMS under 1e-4; a normalised peak over 1
        loudness = meter.integrated_loudness(waveform)
        assert abs(loudness) <= 100
        gain = 10.0 ** ((target - loudness) / 20)
        np.testing.assert_allclose(normalize_loudness(waveform, rate), gain * waveform.astype(np.float64),
                                   rtol=1e-6, atol=0)
    assert np.sqrt(np.mean(burst**2)) < 1e-4 and np.abs(normalize_loudness(spiky, rate)).max() > 1


def test_frame_count_and_clip_follow_the_release(oracle, ours, tolerance):
    derived, rate, fps = oracle.config["derived"], oracle.config["sampling_rate"], oracle.config["fps"]
    assert ours.frames == derived["frame_num"]
    # The release's get_embedding derives the frame count again from the clip's length.
    assert int(len(ours.clip) / rate * fps) == derived["seq_len"] == ours.frames
    assert len(ours.clip) == derived["clip_samples"]
    assert_close("clip", torch.from_numpy(ours.clip), oracle.outputs["clip"], atol=tolerance.loudness, rtol=0)


def test_input_values_are_the_feature_extractors(oracle, ours, tolerance):
    assert_close("input_values", ours.stages.input_values, oracle.outputs["input_values"],
                 atol=tolerance.atol, rtol=tolerance.rtol)
    # The fixture's README: HF's extractor with these settings gives input_values exactly. Ours differs
    # from it by float32 summation order only, far tighter than the fixture's tolerance: a std + eps
    # denominator (1e-7 outside the root) is off by ~1e-5 and fails here.
    extractor = Wav2Vec2FeatureExtractor(**oracle.config["Wav2Vec2FeatureExtractor"])
    rate = oracle.config["sampling_rate"]
    hf = torch.from_numpy(np.squeeze(extractor(oracle.outputs["clip"].numpy(), sampling_rate=rate).input_values))
    assert torch.equal(hf, oracle.outputs["input_values"])
    assert_close("input_values (HF extractor)", ours.stages.input_values, hf, atol=1e-6, rtol=0)


def test_cnn_features_are_interpolated_before_the_transformer(oracle, ours, tolerance):
    stages, outputs = ours.stages, oracle.outputs
    assert stages.cnn_features.shape[0] == oracle.config["derived"]["cnn_frames"]
    assert stages.interpolated.shape[0] == ours.frames
    for name, actual in [("cnn_features", stages.cnn_features), ("cnn_features_interp", stages.interpolated),
                         ("projected", stages.projected)]:
        assert_close(name, actual[None], outputs[name], atol=tolerance.atol, rtol=tolerance.rtol)


def test_every_hidden_state(oracle, ours, tolerance):
    expected = oracle.outputs["hidden_states_all"]
    assert ours.stages.hidden_states.shape[0] == expected.shape[0] == encoder_layers(oracle) + 1
    for layer, state in enumerate(ours.stages.hidden_states):
        assert_close(f"hidden_states_all[{layer}]", state, expected[layer], atol=tolerance.atol, rtol=tolerance.rtol)


def test_stacked_features_and_windows(oracle, ours, tolerance):
    outputs = oracle.outputs
    assert_close("audio_embedding", ours.stages.features, outputs["audio_embedding"],
                 atol=tolerance.atol, rtol=tolerance.rtol)
    assert_close("audio_embs_windowed", ours.windows, outputs["audio_embs_windowed"],
                 atol=tolerance.atol, rtol=tolerance.rtol)


def test_bf16_windows_are_a_plain_cast(oracle, ours, tolerance):
    """The release casts the windows to its bf16 param_dtype; our DiT runs in the model's dtype and takes
    the float32 windows. The cast itself is round-to-nearest of the float32 windows, and ours land within
    one bf16 step of the release's (a value near a rounding boundary may round the other way)."""
    if "audio_embs_windowed_bf16" not in oracle.outputs:
        pytest.skip("this fixture set records no bf16 windows")
    expected = oracle.outputs["audio_embs_windowed_bf16"]
    assert expected.dtype == torch.bfloat16
    assert torch.equal(oracle.outputs["audio_embs_windowed"].to(torch.bfloat16), expected)
    bf16_step = torch.finfo(torch.bfloat16).eps  # the relative spacing at the bottom of a binade
    assert_close("audio_embs_windowed_bf16", ours.windows.to(torch.bfloat16), expected,
                 atol=tolerance.atol, rtol=tolerance.rtol + bf16_step)


def test_zero_audio_features(oracle, encoder, ours, tolerance):
    """The release's negative audio: wav2vec2 of an all-zero clip (no loudness step): not zeros."""
    outputs = oracle.outputs
    zero = encoder(torch.zeros(len(ours.clip)), ours.frames)
    assert zero.abs().max() > 0
    assert_close("zero_audio_embedding", zero, outputs["zero_audio_embedding"], atol=tolerance.atol, rtol=tolerance.rtol)
    assert_close("zero_audio_embs_windowed", window_features(zero, encoder.cfg.window)[None],
                 outputs["zero_audio_embs_windowed"], atol=tolerance.atol, rtol=tolerance.rtol)


def encoder_layers(oracle) -> int:
    return oracle.config["Wav2Vec2Config"]["num_hidden_layers"]
