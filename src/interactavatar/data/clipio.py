"""Reading and writing a clip's media: video frames with PyAV, speech with soundfile.

Writes go through `atomic_path`, so an interrupted run never leaves half a file under its final name.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from pathlib import Path

import av
import av.codec.context
import numpy as np
import soundfile
from av.video.reformatter import VideoReformatter
from scipy.signal import resample_poly

from interactavatar.data.schema import atomic_path


@dataclass
class VideoInfo:
    """What a video file holds, from decoding it: frame count, rate, size, whether it has audio."""

    num_frames: int
    fps: float
    width: int
    height: int
    has_audio: bool


def write_video(path: str | Path, frames: np.ndarray, fps: float, crf: int = 12) -> None:
    """frames: uint8 [F, H, W, 3] (H and W even) -> H.264 (yuv420p) mp4. One encoder thread and
    the bitexact flags keep the bytes identical for identical frames."""
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1
            stream.codec_context.flags |= av.codec.context.Flags.bitexact
            stream.options = {"crf": str(crf), "preset": "fast"}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """-> (uint8 [F, H, W, 3], fps). Raises ValueError naming the file when it does not decode."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate)
            # One reformatter for the whole clip: building one per frame costs more than decoding.
            reformatter = VideoReformatter()
            frames = [reformatter.reformat(frame, format="rgb24").to_ndarray() for frame in container.decode(stream)]
    except (av.FFmpegError, IndexError) as err:
        raise ValueError(f"{path}: video does not decode: {err}") from err
    if not frames:
        raise ValueError(f"{path}: video has no frames")
    return np.stack(frames), fps


def probe_video(path: str | Path) -> VideoInfo:
    """Decode every frame (a container's frame count can lie; decoding cannot)."""
    frames, fps = read_video(path)
    with av.open(str(path)) as container:
        has_audio = bool(container.streams.audio)
    return VideoInfo(frames.shape[0], fps, frames.shape[2], frames.shape[1], has_audio)


def write_audio(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """samples: float [S] in [-1, 1] -> 16-bit PCM wav."""
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), samples, sample_rate, subtype="PCM_16", format="WAV")


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """A wav (soundfile) or a video's audio track (PyAV) -> float32 mono [S] at `sample_rate`."""
    path = Path(path)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError:
        return _decode_audio_track(path, sample_rate)
    return resample(samples.mean(axis=1), rate, sample_rate)


def audio_info(path: str | Path) -> tuple[int, int]:
    """-> (sample rate, sample count) of a wav, without decoding it."""
    info = soundfile.info(str(path))
    return info.samplerate, info.frames


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples.astype(np.float32)
    common = gcd(int(rate), int(target))
    return resample_poly(samples, target // common, rate // common).astype(np.float32)


def _decode_audio_track(path: Path, sample_rate: int) -> np.ndarray:
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: no audio track and not a readable audio file")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = [out.to_ndarray().reshape(-1)
                      for frame in container.decode(container.streams.audio[0])
                      for out in resampler.resample(frame)]
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except av.FFmpegError as err:
        raise ValueError(f"{path}: audio does not decode: {err}") from err
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
