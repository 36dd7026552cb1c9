"""Speech conditioning: the frozen wav2vec2 encoder and the MultiTalk-style projection.

Pipeline (the release's, see DESIGN 1b): waveform [S] at 16 kHz, -23 LUFS (io.media) -> the feature
extractor's normalisation -> wav2vec2's CNN features (50 Hz) linearly interpolated to the video frame
count -> feature projection and transformer encoder -> hidden states 1..N [T, N, D] -> a 5-frame window
per video frame [T, 5, N, D] -> projection to `tokens_per_frame` tokens per latent frame [F, 32, D].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from interactavatar.config import AudioConfig


def frame_count(seconds: float, fps: int, requested: int | None, temporal_compression: int = 4) -> int:
    """The release's rule: (int(seconds * fps) - 1) // 4 * 4 + 1, capped by the requested count."""
    available = (int(seconds * fps) - 1) // temporal_compression * temporal_compression + 1
    if available < 1:
        raise ValueError(f"audio: {seconds:.3f} s is shorter than one video frame at {fps} fps")
    return available if requested is None else min(available, requested)


def fit_to_frames(waveform: np.ndarray, num_frames: int, fps: int, sample_rate: int) -> np.ndarray:
    """Cut the audio to exactly `num_frames` video frames, zero-padding when it is shorter: the
    release keeps the first int(frames * rate / fps) samples (this order: exact for 16 kHz at 25 fps)."""
    samples = int(num_frames * sample_rate / fps)
    out = np.zeros(samples, dtype=np.float32)
    out[: min(samples, len(waveform))] = waveform[:samples]
    return out


def window_features(features: torch.Tensor, window: int) -> torch.Tensor:
    """features: [..., T, N, D] -> [..., T, window, N, D]: frame t sees t-w//2 .. t+w//2, clamped."""
    steps = features.shape[-3]
    offsets = torch.arange(window, device=features.device) - window // 2
    index = (torch.arange(steps, device=features.device)[:, None] + offsets).clamp(0, steps - 1)
    return features[..., index, :, :]


def normalise_waveform(waveform: torch.Tensor) -> torch.Tensor:
    """[S] -> wav2vec2's input values [S] float32, as HF `Wav2Vec2FeatureExtractor` (do_normalize)
    prepares them: zero mean and unit variance over the clip, (x - mean) / sqrt(var + 1e-7), with the
    population variance (1e-7 inside the root, not added to the standard deviation)."""
    values = waveform.float()
    return (values - values.mean()) / torch.sqrt(values.var(correction=0) + 1e-7)


def resample_frames(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[B, T, C] -> [B, num_frames, C]: linear interpolation along time with both end points kept
    (align_corners), how the release brings the 50 Hz CNN features to the video frame count."""
    resampled = F.interpolate(features.transpose(1, 2), size=num_frames, mode="linear", align_corners=True)
    return resampled.transpose(1, 2)


def encoder_hidden_states(encoder: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Run wav2vec2's transformer encoder on [B, T, D] -> its hidden states [L + 1, B, T, D] as
    `output_hidden_states` gave them up to transformers 4.x: the input of the first layer (after the
    positional convolution), the output of each layer, and last the encoder's output (the last layer's,
    after the final LayerNorm in the stable-layer-norm variant). transformers 5.x records hidden
    states only inside `Wav2Vec2Model.forward`, which cannot interpolate, so the layers are hooked."""
    states: list[torch.Tensor] = []

    def first_input(_module, args, kwargs):
        states.append(args[0] if args else kwargs["hidden_states"])

    def layer_output(_module, _args, output):
        states.append(output[0] if isinstance(output, tuple) else output)

    layers = encoder.layers
    handles = [layers[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(layer_output) for layer in layers[:-1]]
    try:
        last = encoder(hidden)[0]
    finally:
        for handle in handles:
            handle.remove()
    if len(states) != len(layers):
        raise RuntimeError(f"wav2vec2 encoder: {len(states)} hidden states recorded for {len(layers)} layers")
    return torch.stack([*states, last])


@dataclass
class AudioStages:
    """Every intermediate of the release's audio path for one waveform (`AudioEncoder.stages`)."""

    input_values: torch.Tensor  # [S] the normalised waveform
    cnn_features: torch.Tensor  # [T50, C] the CNN feature extractor's output, 50 Hz
    interpolated: torch.Tensor  # [T, C] those resampled to the video frames, before the transformer
    projected: torch.Tensor  # [T, D] feature projection (LayerNorm + Linear)
    hidden_states: torch.Tensor  # [L + 1, T, D] the encoder's states; 0 is the input of the first layer
    features: torch.Tensor  # [T, N, D] hidden states 1..N, per frame


class AudioProjection(nn.Module):
    """Windowed features of each latent frame -> `tokens_per_frame` audio tokens (MultiTalk).

    The first latent frame covers one video frame (its 5-frame window); each later latent frame
    covers `compression` video frames and takes the leading half-window of its first frame, the
    centre of its inner frames and the trailing half-window of its last frame (8 for 4 frames).
    """

    def __init__(self, cfg: AudioConfig, temporal_compression: int):
        super().__init__()
        self.cfg = cfg
        self.compression = temporal_compression
        half = cfg.window // 2
        later_window = 2 * (half + 1) + (temporal_compression - 2)
        per_feature = cfg.num_layers * cfg.feature_dim
        self.first = nn.Linear(cfg.window * per_feature, cfg.projection_dim)
        self.later = nn.Linear(later_window * per_feature, cfg.projection_dim)
        self.mid = nn.Linear(cfg.projection_dim, cfg.projection_dim)
        self.out = nn.Linear(cfg.projection_dim, cfg.tokens_per_frame * cfg.token_dim)
        self.norm = nn.LayerNorm(cfg.token_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """windows: [B, T, window, N, D], T = 1 + 4k video frames -> tokens [B, 1 + k, tokens, D]."""
        half = self.cfg.window // 2
        first = rearrange(windows[:, :1], "b f w n d -> b f (w n d)")
        groups = rearrange(windows[:, 1:], "b (f c) w n d -> b f c w n d", c=self.compression)
        later = torch.cat(
            [
                groups[:, :, 0, : half + 1],
                groups[:, :, 1:-1, half],
                groups[:, :, -1, half:],
            ],
            dim=2,
        )
        later = rearrange(later, "b f w n d -> b f (w n d)")
        hidden = torch.cat([F.relu(self.first(first)), F.relu(self.later(later))], dim=1)
        tokens = self.out(F.relu(self.mid(hidden)))
        return self.norm(rearrange(tokens, "b f (t d) -> b f t d", t=self.cfg.tokens_per_frame))


class AudioEncoder(nn.Module):
    """Frozen wav2vec2 (HF `Wav2Vec2Model`) run on the release's path: waveform -> hidden states 1..N
    at the video frame rate, [T, N, D]. The CNN features are interpolated to the frame count before
    the transformer, so every layer already runs at 25 fps."""

    def __init__(self, model: nn.Module, cfg: AudioConfig):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: AudioConfig, path: str | Path | None = None, seed: int = 0) -> AudioEncoder:
        """Load wav2vec2 from a local directory, or build the tiny random one of kind "random"."""
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        location = path or cfg.path
        if location is not None:
            return cls(Wav2Vec2Model.from_pretrained(str(location)), cfg)
        if cfg.kind != "random":
            raise ValueError(f"audio: kind {cfg.kind!r} needs a local wav2vec2 directory (audio.path)")
        random_config = Wav2Vec2Config(
            hidden_size=cfg.feature_dim,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=2,
            intermediate_size=2 * cfg.feature_dim,
            conv_dim=(32, 32, 32, 32, 32, 32, 32),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return cls(Wav2Vec2Model(random_config), cfg)

    def save(self, directory: str | Path) -> None:
        self.model.save_pretrained(str(directory))

    def train(self, mode: bool = True) -> AudioEncoder:
        """Frozen: wav2vec2 stays in eval mode (no dropout, no SpecAugment) whatever its parents do."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def stages(self, waveform: torch.Tensor, num_frames: int) -> AudioStages:
        """waveform: [S] at 16 kHz, loudness-normalised and cut to the frames -> every step of the
        release's path: normalise, CNN features, interpolate them to `num_frames`, feature projection,
        encoder; hidden states 1..N stacked per frame."""
        model = self.model
        input_values = normalise_waveform(waveform)
        dtype = next(model.parameters()).dtype
        cnn = model.feature_extractor(input_values[None].to(dtype)).transpose(1, 2)  # [1, T50, C]
        interpolated = resample_frames(cnn, num_frames)
        projected, _ = model.feature_projection(interpolated)  # (projection, its LayerNorm's output)
        hidden = encoder_hidden_states(model.encoder, projected)[:, 0]  # [L + 1, T, D]
        if self.cfg.num_layers > hidden.shape[0] - 1:
            raise ValueError(f"audio: num_layers {self.cfg.num_layers} > wav2vec2's {hidden.shape[0] - 1} layers")
        features = rearrange(hidden[1 : self.cfg.num_layers + 1], "n t d -> t n d")
        return AudioStages(input_values, cnn[0], interpolated[0], projected[0], hidden, features)

    def forward(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        """waveform: [S] at 16 kHz -> hidden states 1..N at `num_frames` video frames: [T, N, D]."""
        return self.stages(waveform, num_frames).features
