"""Speech-like audio without recordings: voiced harmonics shaped by vowel formants under syllable
envelopes. Enough for lip sync: the envelope (what the mouth follows) is known exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyloudnorm

# (F1, F2) in Hz of a few vowels: a, e, i, o, u.
VOWEL_FORMANTS = ((800, 1200), (500, 1900), (300, 2300), (500, 900), (320, 800))
TARGET_LUFS = -23.0
MIN_LOUDNESS_SECONDS = 0.4  # pyloudnorm's gating block


@dataclass
class Speech:
    samples: np.ndarray   # float32 [S] in [-1, 1]
    envelope: np.ndarray  # float32 [S] in [0, 1], the syllable envelope before normalisation


def synthesize(rng: np.random.Generator, seconds: float, sample_rate: int, high: bool) -> Speech:
    """Syllables of 120-220 ms with 20-80 ms gaps, f0 around 210 Hz (high) or 120 Hz, a slight
    vibrato and declination, loudness-normalised to -23 LUFS when long enough to measure."""
    count = int(round(seconds * sample_rate))
    t = np.arange(count) / sample_rate
    f0 = rng.uniform(180, 240) if high else rng.uniform(100, 140)
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 5 * t)) * (1 - 0.12 * t / max(seconds, 1e-6))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    samples = np.zeros(count)
    envelope = np.zeros(count)
    start = rng.uniform(0.02, 0.06)
    while start < seconds - 0.05:
        length = min(rng.uniform(0.12, 0.22), seconds - start)
        bump = np.clip((t - start) / length, 0, 1)
        syllable = rng.uniform(0.6, 1.0) * np.sin(np.pi * bump) ** 2
        formants = VOWEL_FORMANTS[int(rng.integers(len(VOWEL_FORMANTS)))]
        samples += syllable * _voiced(phase, f0, formants, sample_rate)
        envelope = np.maximum(envelope, syllable)
        start += length + rng.uniform(0.02, 0.08)
    samples += 0.01 * envelope * rng.standard_normal(count)
    return Speech(_normalised(samples, sample_rate), envelope.astype(np.float32))


def frame_envelope(envelope: np.ndarray, num_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """[S] -> [num_frames] mean envelope over each video frame's samples, scaled to peak 1."""
    per_frame = sample_rate / fps
    values = np.array([envelope[int(f * per_frame): max(int((f + 1) * per_frame), int(f * per_frame) + 1)].mean()
                       if int(f * per_frame) < len(envelope) else 0.0 for f in range(num_frames)])
    peak = values.max(initial=0.0)
    return values / peak if peak > 0 else values


def _voiced(phase: np.ndarray, f0: float, formants: tuple[int, int], sample_rate: int) -> np.ndarray:
    signal = np.zeros_like(phase)
    for k in range(1, int(min(4000, sample_rate / 2) // f0) + 1):
        frequency = k * f0
        gain = sum(np.exp(-(((frequency - f) / 150.0) ** 2)) for f in formants) + 0.1 / k
        signal += gain * np.sin(k * phase)
    return signal


def _normalised(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    peak = np.abs(samples).max(initial=0.0)
    if peak == 0:
        return samples.astype(np.float32)
    samples = 0.3 * samples / peak
    if len(samples) >= MIN_LOUDNESS_SECONDS * sample_rate:
        loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(samples)
        if np.isfinite(loudness):
            samples = pyloudnorm.normalize.loudness(samples, loudness, TARGET_LUFS)
    return np.clip(samples, -1.0, 1.0).astype(np.float32)
