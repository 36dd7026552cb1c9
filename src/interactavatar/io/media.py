"""Images, speech and video files: PyAV for video, soundfile for audio, PIL for images.

Every write goes through `io.files.atomic_path`, so an interrupted run never leaves half a file
under its final name.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from pathlib import Path

import av
import av.codec.context
import numpy as np
import pyloudnorm
import soundfile
from av.video.reformatter import VideoReformatter
from PIL import Image, UnidentifiedImageError
from scipy.signal import resample_poly

from interactavatar.io.files import atomic_path

TARGET_LOUDNESS_LUFS = -23.0
LOUDNESS_LIMIT_LU = 100.0  # the release leaves audio measured beyond +-100 as it is


def load_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """An image [H, W, 3] uint8 (mode "RGBA": [H, W, 4], transparency kept, as an object cut-out
    needs); a clear error naming the file when it is not an image."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
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


def crop_box(image: np.ndarray, box) -> np.ndarray | None:
    """The pixels of `image` [H, W, ...] inside box (x0, y0, x1, y1), in pixels of the image: columns
    floor(x0)..floor(x1) and rows floor(y0)..floor(y1), both ends included, clipped to the image.
    None when the box is missing (None or NaN), empty, or outside the image."""
    if box is None or not np.all(np.isfinite(box)):
        return None
    x0, y0, x1, y1 = (int(np.floor(v)) for v in box)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1 + 1, image.shape[1]), min(y1 + 1, image.shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    return image[y0:y1, x0:x1]


def fit_on_white(image: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """The release's object image: [h, w, 3] uint8 (or [h, w, 4] RGBA, composited on white) scaled
    to fit inside size = (height, width) keeping its aspect ratio (the limiting side fills the size,
    the other is floored), Lanczos, centred on white -> [height, width, 3] uint8. None: all white.
    Idempotent: an RGB image already of the size comes back unchanged."""
    height, width = size
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    if image is None:
        return np.asarray(canvas)
    source_height, source_width = image.shape[:2]
    if width * source_height <= height * source_width:  # width limits the scale
        fitted = (width, max(1, source_height * width // source_width))
    else:
        fitted = (max(1, source_width * height // source_height), height)
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if picture.mode not in ("RGB", "RGBA"):
        picture = picture.convert("RGB")
    if picture.size != fitted:
        picture = picture.resize(fitted, Image.LANCZOS)
    position = ((width - fitted[0]) // 2, (height - fitted[1]) // 2)
    canvas.paste(picture, position, picture if picture.mode == "RGBA" else None)
    return np.asarray(canvas)


def normalize_loudness(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """To -23 LUFS as the release does (its `loudness_norm`): the integrated loudness measured by a
    pyloudnorm meter on the waveform as given; when its magnitude exceeds 100 LU (silence measures
    -inf) the audio passes unchanged, otherwise it is scaled by the gain, without clipping. Float32
    out, the dtype wav2vec2's feature extractor reads it in. Clips shorter than the meter's block,
    which the release cannot measure (pyloudnorm raises), pass unchanged too."""
    meter = pyloudnorm.Meter(sample_rate)
    if waveform.size < meter.block_size * sample_rate:
        return waveform.astype(np.float32)
    loudness = meter.integrated_loudness(waveform)
    if abs(loudness) > LOUDNESS_LIMIT_LU:
        return waveform.astype(np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Possible clipped samples", UserWarning)
        normalised = pyloudnorm.normalize.loudness(waveform, loudness, TARGET_LOUDNESS_LUFS)
    return normalised.astype(np.float32)


def load_speech(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 waveform at `sample_rate`, loudness-normalised."""
    try:
        waveform, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"{path}: not readable audio ({err})") from err
    return speech_from_waveform(waveform, source_rate, sample_rate)


def speech_from_waveform(waveform: np.ndarray, rate: int, sample_rate: int = 16000) -> np.ndarray:
    """Decoded audio ([S] or [S, channels] at `rate`) -> what `load_speech` gives: mono float32 at
    `sample_rate`, loudness-normalised."""
    waveform = np.asarray(waveform, dtype=np.float32)
    mono = waveform.mean(axis=1) if waveform.ndim == 2 else waveform
    return normalize_loudness(resample(mono, rate, sample_rate), sample_rate)


def has_audio_stream(path: str | Path) -> bool:
    with av.open(str(path)) as container:
        return len(container.streams.audio) > 0


@dataclass
class VideoInfo:
    """What a video file holds, from decoding it: frame count, rate, size, whether it has audio."""

    num_frames: int
    fps: float
    width: int
    height: int
    has_audio: bool


def write_video(path: str | Path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = 16000, *, exact: bool = False, crf: int | None = None) -> None:
    """frames: uint8 [T, H, W, 3] (H and W even) -> H.264 mp4 (yuv420p, plays everywhere), with
    the speech as AAC when `audio` ([S] float at `sample_rate`) is given.

    `exact`: the dataset's encoding. Near-lossless (crf 12 unless `crf` says otherwise), one
    encoder thread and the bitexact flags, so identical frames give identical bytes (DVC sees an
    unchanged clip as unchanged). Otherwise a quick encode for viewing (crf 18).
    """
    _refuse_exact_audio(path, exact, audio)
    with atomic_path(path) as tmp:
        _encode_video(str(tmp), frames, fps, audio, sample_rate, exact, crf)


def encode_video(frames: np.ndarray, fps: float, audio: np.ndarray | None = None, sample_rate: int = 16000, *,
                 exact: bool = False, crf: int | None = None) -> bytes:
    """The bytes `write_video` would write, encoded in memory (no file)."""
    _refuse_exact_audio("video", exact, audio)
    buffer = io.BytesIO()
    _encode_video(buffer, frames, fps, audio, sample_rate, exact, crf)
    return buffer.getvalue()


def _refuse_exact_audio(name, exact: bool, audio: np.ndarray | None) -> None:
    if exact and audio is not None:
        raise ValueError(f"{name}: exact videos are silent (the dataset keeps speech in its own wav)")


def _encode_video(output: str | io.BytesIO, frames: np.ndarray, fps: float, audio: np.ndarray | None,
                  sample_rate: int, exact: bool, crf: int | None) -> None:
    """The one mp4 encoder: into a file path or a seekable binary buffer."""
    options = {"fflags": "+bitexact"} if exact else {}
    with av.open(output, "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if exact:
            stream.codec_context.thread_count = 1
            stream.codec_context.flags |= av.codec.context.Flags.bitexact
        default_crf, speed = (12, "fast") if exact else (18, "veryfast")
        stream.options = {"crf": str(default_crf if crf is None else crf), "preset": speed}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "mono"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
        if audio_stream is not None:
            samples = np.ascontiguousarray(audio.astype(np.float32)[None])
            audio_frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            audio_frame.sample_rate = sample_rate
            container.mux(audio_stream.encode(audio_frame))
            container.mux(audio_stream.encode())


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
