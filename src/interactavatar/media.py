"""Images, speech and video files: PyAV for video, soundfile for audio, PIL for images.

`read_video` and `resample` are the data package's (`interactavatar.data.clipio`), re-exported here
for generation and serving.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import soundfile
from PIL import Image, UnidentifiedImageError

from interactavatar.data.clipio import read_video as read_video  # re-exported
from interactavatar.data.clipio import resample

TARGET_LOUDNESS_LUFS = -23.0
SILENCE_RMS = 1e-4


def load_image(path: str | Path) -> np.ndarray:
    """An RGB image [H, W, 3] uint8; a clear error naming the file when it is not an image."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err


def cover_transform(source: tuple[int, int], target: tuple[int, int]) -> tuple[float, int, int]:
    """(scale, left, top) that scales a (height, width) image to cover `target`, then centre-crops."""
    scale = max(target[0] / source[0], target[1] / source[1])
    scaled_height, scaled_width = max(target[0], round(source[0] * scale)), max(target[1], round(source[1] * scale))
    return scale, (scaled_width - target[1]) // 2, (scaled_height - target[0]) // 2


def resize_and_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to cover (height, width), then centre-crop: [H, W, 3] -> [h, w, 3] uint8."""
    height, width = size
    scale, left, top = cover_transform(image.shape[:2], size)
    resized = Image.fromarray(image).resize(
        (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale))), Image.BICUBIC
    )
    return np.asarray(resized.crop((left, top, left + width, top + height)))


def normalize_loudness(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """To -23 LUFS as the release does; near-silence (and clips too short to measure) pass as is."""
    if waveform.size == 0 or np.sqrt(np.mean(waveform**2)) < SILENCE_RMS:
        return waveform
    meter = pyloudnorm.Meter(sample_rate)
    if waveform.size < meter.block_size * sample_rate:
        return waveform
    loudness = meter.integrated_loudness(waveform)
    if not np.isfinite(loudness):
        return waveform
    normalised = pyloudnorm.normalize.loudness(waveform, loudness, TARGET_LOUDNESS_LUFS)
    return np.clip(normalised, -1.0, 1.0).astype(np.float32)


def load_speech(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 waveform at `sample_rate`, loudness-normalised."""
    try:
        waveform, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"{path}: not readable audio ({err})") from err
    return normalize_loudness(resample(waveform.mean(axis=1), source_rate, sample_rate), sample_rate)


def write_video(
    path: str | Path, frames: np.ndarray, fps: int, audio: np.ndarray | None = None, sample_rate: int = 16000
) -> None:
    """frames: [T, H, W, 3] uint8 -> H.264 mp4 (yuv420p, plays everywhere) with AAC audio when given.

    Written to a temporary file and renamed, so a failure never leaves a broken mp4 behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=".mp4", dir=path.parent)
    os.close(fd)
    try:
        with av.open(temporary, mode="w", format="mp4") as container:
            video_stream = container.add_stream("libx264", rate=Fraction(fps))
            video_stream.width, video_stream.height = frames.shape[2], frames.shape[1]
            video_stream.pix_fmt = "yuv420p"
            video_stream.options = {"crf": "18", "preset": "veryfast"}
            audio_stream = None
            if audio is not None:
                audio_stream = container.add_stream("aac", rate=sample_rate)
                audio_stream.layout = "mono"
            for frame in frames:
                container.mux(video_stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(video_stream.encode())
            if audio_stream is not None:
                samples = np.ascontiguousarray(audio.astype(np.float32)[None])
                audio_frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
                audio_frame.sample_rate = sample_rate
                container.mux(audio_stream.encode(audio_frame))
                container.mux(audio_stream.encode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def has_audio_stream(path: str | Path) -> bool:
    with av.open(str(path)) as container:
        return len(container.streams.audio) > 0
