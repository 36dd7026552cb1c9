import numpy as np
import pytest
import torch

from interactavatar.config import AudioConfig, preset
from interactavatar.model.audio import (
    AudioEncoder,
    AudioProjection,
    fit_to_frames,
    frame_count,
    window_features,
)
from interactavatar.model.text import TextEncoder


def test_frame_count_follows_the_release_rule():
    assert frame_count(1.0, 25, None) == 25  # (25 - 1) // 4 * 4 + 1
    assert frame_count(1.0, 25, 17) == 17
    assert frame_count(3.3, 25, 81) == 81
    assert frame_count(0.2, 25, None) == 5
    with pytest.raises(ValueError, match="shorter than one video frame"):
        frame_count(0.01, 25, None)


def test_audio_is_cut_or_zero_padded_to_the_frames():
    long = np.ones(20000, dtype=np.float32)
    assert fit_to_frames(long, 25, 25, 16000).shape == (16000,)
    short = fit_to_frames(np.ones(100, dtype=np.float32), 5, 25, 16000)
    assert short.shape == (3200,) and short[:100].sum() == 100 and short[100:].sum() == 0


def test_windows_are_clamped_at_the_ends():
    features = torch.arange(4.0).reshape(4, 1, 1)
    windows = window_features(features, 5)
    assert windows.shape == (4, 5, 1, 1)
    assert windows[0].flatten().tolist() == [0, 0, 0, 1, 2]
    assert windows[3].flatten().tolist() == [1, 2, 3, 3, 3]


def test_paper_projection_sizes_match_multitalk():
    with torch.device("meta"):
        projection = AudioProjection(AudioConfig(), temporal_compression=4)
    assert projection.first.in_features == 5 * 12 * 768
    assert projection.later.in_features == 8 * 12 * 768
    assert projection.out.out_features == 32 * 768


def test_random_wav2vec2_gives_all_layers_at_the_frame_rate(tmp_path):
    cfg = preset("tiny").audio
    encoder = AudioEncoder.from_config(cfg)
    features = encoder(torch.randn(16000), num_frames=25)
    assert features.shape == (25, cfg.num_layers, cfg.feature_dim)
    encoder.save(tmp_path / "audio")
    reloaded = AudioEncoder.from_config(cfg, path=tmp_path / "audio")
    waveform = torch.randn(8000)
    torch.testing.assert_close(encoder(waveform, 13), reloaded(waveform, 13))


def test_pretrained_encoders_need_a_path():
    with pytest.raises(ValueError, match="audio.path"):
        AudioEncoder.from_config(AudioConfig(kind="wav2vec2"))
    with pytest.raises(ValueError, match="text.path"):
        TextEncoder.from_config(preset("paper").text)


def test_random_t5_encodes_and_masks(tmp_path):
    cfg = preset("tiny").text
    encoder = TextEncoder.from_config(cfg)
    features, mask = encoder(["lift the red cup", "hi"])
    assert features.shape == (2, cfg.max_tokens, cfg.dim)
    assert mask[1].sum() < mask[0].sum()
    assert features[1, ~mask[1]].abs().sum() == 0
    encoder.save(tmp_path / "text")
    again, _ = TextEncoder.from_config(cfg, path=tmp_path / "text")(["lift the red cup", "hi"])
    torch.testing.assert_close(features, again)


def test_packaged_minilm_grounds_real_sentences():
    """The demo's text encoder is pretrained: colour words it was trained on land apart."""
    encoder = TextEncoder.from_config(preset("demo").text)
    features, mask = encoder(["lift the red cup", "lift the red mug", "lift the blue ball"])
    pooled = (features * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    assert features.shape[-1] == 384
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2]
