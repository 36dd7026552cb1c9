"""Speech conditioning: the frozen wav2vec2 encoder and the MultiTalk-style projection.

Pipeline: waveform [S] at 16 kHz -> wav2vec2 hidden states 1..N (50 Hz) -> linear interpolation to
the video frame rate -> [T, N, D] -> a 5-frame window per video frame [T, 5, N, D] -> projection to
`tokens_per_frame` tokens per latent frame [F, 32, D].
"""

from __future__ import annotations

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
    """Cut the audio to exactly `num_frames` video frames, zero-padding when it is shorter."""
    samples = round(num_frames / fps * sample_rate)
    out = np.zeros(samples, dtype=np.float32)
    out[: min(samples, len(waveform))] = waveform[:samples]
    return out


def window_features(features: torch.Tensor, window: int) -> torch.Tensor:
    """features: [..., T, N, D] -> [..., T, window, N, D]: frame t sees t-w//2 .. t+w//2, clamped."""
    steps = features.shape[-3]
    offsets = torch.arange(window, device=features.device) - window // 2
    index = (torch.arange(steps, device=features.device)[:, None] + offsets).clamp(0, steps - 1)
    return features[..., index, :, :]


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
        self.out = nn.Linear(cfg.projection_dim, cfg.tokens_per_frame * cfg.feature_dim)
        self.norm = nn.LayerNorm(cfg.feature_dim)

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
    """Frozen wav2vec2: waveform -> all hidden layers at the video frame rate, [T, N, D]."""

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

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        """waveform: [S] at 16 kHz -> hidden states 1..N interpolated to num_frames: [T, N, D]."""
        normalised = (waveform - waveform.mean()) / (waveform.std() + 1e-7)
        outputs = self.model(normalised[None].float(), output_hidden_states=True)
        hidden = torch.stack(outputs.hidden_states[1 : self.cfg.num_layers + 1], dim=2)[0]  # [T50, N, D]
        hidden = rearrange(hidden, "t n d -> (n d) t")[None]
        resampled = F.interpolate(hidden, size=num_frames, mode="linear", align_corners=True)[0]
        return rearrange(resampled, "(n d) t -> t n d", n=self.cfg.num_layers)
