"""Images, speech and video files: PyAV for video, soundfile for audio, PIL for images.

Every write goes through `io.files.atomic_path`, so an interrupted run never leaves half a file
under its final name.

Media from strangers (the endpoint's requests) are read by `image_from_bytes`, `speech_from_bytes`
and `video_from_bytes`, whose cost is bounded by what their headers declare: the header is checked
(`image_header`, `speech_header`, `video_header`) before anything is decoded, no more than it
declares is ever read, and a limit breached is a ValueError saying which. A few kilobytes can
otherwise declare gigabytes: a WAV at a sample rate of 4 MHz, an mp4 of 257 frames of 1024 x 1024.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.codec.context
import numpy as np
import pyloudnorm
import soundfile
from av.video.reformatter import Interpolation, VideoReformatter
from PIL import Image, UnidentifiedImageError
from scipy.signal import resample_poly

from interactavatar.io.files import atomic_path

TARGET_LOUDNESS_LUFS = -23.0
LOUDNESS_LIMIT_LU = 100.0  # the release leaves audio measured beyond +-100 as it is

# What the bounded readers accept. PIL is told to try only these image formats (no EPS or PSD
# parsers on untrusted bytes); the speech formats are the ones libsndfile reads without guessing.
IMAGE_FORMATS = ("PNG", "JPEG")
SPEECH_FORMATS = ("WAV", "WAVEX", "FLAC", "OGG")
SPEECH_RATES = (8000, 192000)  # Hz, both included: telephone speech to studio audio
MAX_SPEECH_CHANNELS = 8  # 7.1 surround; speech with more is not speech
VIDEO_CODECS = ("h264", "hevc", "mpeg4", "vp9", "av1")
# Samples (all channels together) decoded at once while mixing a long file down to mono.
DECODE_BLOCK_SAMPLES = 2**18
# resample_poly's filter has 20 x max(up, down) + 1 taps: 44101 Hz -> 16 kHz in lowest terms is
# 16000/44101, 882,021 taps, and 4,000,001 Hz took 3.7 GB. Ratios whose terms exceed this are
# replaced by the nearest fraction whose terms do not: at most 200,001 taps (1.6 MB), a rate error
# below 1e-4 (6 ms a minute, a sixth of a video frame). Standard rates keep their exact ratio.
MAX_RESAMPLE_TERM = 10000


def load_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """An image [H, W, 3] uint8 (mode "RGBA": [H, W, 4], transparency kept, as an object cut-out
    needs); a clear error naming the file when it is not an image."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err


@contextlib.contextmanager
def _open_image(data: bytes, max_pixels: int):
    """The image in `data`, opened (only its header read) and its size checked."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            if image.width * image.height > max_pixels:
                raise ValueError(f"{image.width}x{image.height} is more than {max_pixels} pixels")
            yield image
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"not a PNG or JPEG image ({err})") from None


def image_header(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(height, width) of a PNG or JPEG, from its header; ValueError when it is neither or has
    more than `max_pixels` pixels."""
    with _open_image(data, max_pixels) as image:
        return image.height, image.width


def image_from_bytes(data: bytes, max_pixels: int, mode: str = "RGB") -> np.ndarray:
    """PNG or JPEG bytes -> [H, W, 3] uint8 ([H, W, 4] for mode "RGBA"), the size checked from the
    header before the pixels are decoded."""
    with _open_image(data, max_pixels) as image:
        return np.asarray(image.convert(mode))


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


@dataclass(frozen=True)
class SpeechHeader:
    """What an audio file's header declares."""

    format: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


@contextlib.contextmanager
def _open_speech(data: bytes, max_seconds: float, min_seconds: float):
    """(the open soundfile, its checked header) for audio bytes: a format of SPEECH_FORMATS, a rate
    within SPEECH_RATES, at most MAX_SPEECH_CHANNELS channels, a length within the bounds."""
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            header = SpeechHeader(sound.format, sound.samplerate, sound.channels, sound.frames)
            if header.format not in SPEECH_FORMATS:
                raise ValueError(f"{header.format} is not one of {', '.join(SPEECH_FORMATS)}")
            low, high = SPEECH_RATES
            if not low <= header.sample_rate <= high:
                raise ValueError(f"declares {header.sample_rate} Hz, outside [{low}, {high}] Hz")
            if not 1 <= header.channels <= MAX_SPEECH_CHANNELS:
                raise ValueError(f"declares {header.channels} channels, not 1 to {MAX_SPEECH_CHANNELS}")
            if header.seconds > max_seconds:
                raise ValueError(f"{header.seconds:.1f} s is longer than the limit of {max_seconds:g} s")
            if header.seconds < min_seconds or header.frames < 1:
                raise ValueError(f"{header.seconds:.3f} s is shorter than {min_seconds:g} s")
            yield sound, header
    except soundfile.LibsndfileError as err:
        raise ValueError(f"not readable audio, expected {', '.join(SPEECH_FORMATS)} ({err})") from None


def speech_header(data: bytes, max_seconds: float, min_seconds: float = 0.0) -> SpeechHeader:
    """The header of audio bytes, checked (see `speech_from_bytes`) before a sample is decoded."""
    with _open_speech(data, max_seconds, min_seconds) as (_, header):
        return header


def speech_from_bytes(data: bytes, sample_rate: int, max_seconds: float, min_seconds: float = 0.0) -> np.ndarray:
    """Audio bytes -> what `load_speech` gives for the same file (mono float32 at `sample_rate`,
    loudness-normalised), at a cost bounded by the limits: the header must declare a format of
    SPEECH_FORMATS, a rate within SPEECH_RATES, at most MAX_SPEECH_CHANNELS channels and a length
    within [min_seconds, max_seconds]; then no more frames than it declares are read, mixed down to
    mono a block at a time (so channels never multiply the memory), and resampled with a bounded
    filter. ValueError names the broken limit, or NaN/infinite samples."""
    with _open_speech(data, max_seconds, min_seconds) as (sound, header):
        mono = np.empty(header.frames, np.float32)
        block, filled = max(1, DECODE_BLOCK_SAMPLES // header.channels), 0
        while filled < header.frames:
            chunk = sound.read(min(block, header.frames - filled), dtype="float32", always_2d=True)
            if not len(chunk):
                break  # the data ends before the header says: keep what there is
            mono[filled:filled + len(chunk)] = chunk.mean(axis=1)
            filled += len(chunk)
    mono = mono[:filled]
    if filled / header.sample_rate < min_seconds or not filled:
        raise ValueError(f"holds {filled / header.sample_rate:.3f} s of samples, shorter than {min_seconds:g} s")
    if not np.isfinite(mono).all():
        raise ValueError("holds NaN or infinite samples")
    return speech_from_waveform(mono, header.sample_rate, sample_rate)


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


EXACT_CONVERSION = Interpolation.BILINEAR | Interpolation.BITEXACT | Interpolation.ACCURATE_RND
# x264's macroblock tree reads memory it never wrote: with it on, the same frames encode to other
# bytes when the heap holds other leftovers (seen with MALLOC_PERTURB_, and once in CI).
EXACT_X264_OPTIONS = {"x264-params": "mbtree=0"}


def write_video(path: str | Path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = 16000, *, exact: bool = False, crf: int | None = None) -> None:
    """frames: uint8 [T, H, W, 3] (H and W even) -> H.264 mp4 (yuv420p, plays everywhere), with
    the speech as AAC when `audio` ([S] float at `sample_rate`) is given.

    `exact`: the dataset's encoding. Near-lossless (crf 12 unless `crf` says otherwise), one
    encoder thread, no macroblock tree, the bitexact flags and swscale's bit-exact RGB->YUV
    conversion, so identical frames give identical bytes on any machine and in any process (DVC
    sees an unchanged clip as unchanged). Otherwise a quick encode for viewing (crf 18).
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
        default_crf, speed = (12, "fast") if exact else (18, "veryfast")
        x264_options = {"crf": str(default_crf if crf is None else crf), "preset": speed}
        if exact:
            stream.codec_context.thread_count = 1
            stream.codec_context.flags |= av.codec.context.Flags.bitexact
            x264_options |= EXACT_X264_OPTIONS
        stream.options = x264_options
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "mono"
        # swscale's default RGB->YUV conversion takes SIMD paths whose rounding is not the reference
        # one, so another CPU could encode the same frames to other bytes; its bit-exact mode costs
        # ~0.2 ms a 480x832 frame, nothing beside x264.
        exact_yuv = VideoReformatter() if exact else None
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if exact_yuv is not None:
                video_frame = exact_yuv.reformat(video_frame, format="yuv420p", threads=1,
                                                 interpolation=EXACT_CONVERSION)
            container.mux(stream.encode(video_frame))
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


@dataclass(frozen=True)
class VideoHeader:
    """What an mp4's header declares of its first video stream (frames 0: it does not say)."""

    codec: str
    width: int
    height: int
    frames: int


@contextlib.contextmanager
def _open_video(data: bytes, max_pixels: int, max_frames: int):
    """(the open container, its first video stream, the checked header) for mp4 bytes."""
    try:
        # The mp4 demuxer only, no probing: a PNG (or anything else FFmpeg can read) is not a
        # one-frame video. Undecodable metadata is dropped, not an error.
        container = av.open(io.BytesIO(data), format="mp4", metadata_errors="ignore")
    except av.FFmpegError as err:
        raise ValueError(f"not a readable mp4 ({err})") from None
    with container:
        if not container.streams.video:
            raise ValueError("has no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
        if codec not in VIDEO_CODECS:
            raise ValueError(f"codec {codec} is not one of {', '.join(VIDEO_CODECS)}")
        frames = stream.frames
        if not frames and stream.duration and stream.average_rate:
            frames = round(float(stream.duration * stream.time_base * stream.average_rate))
        header = VideoHeader(codec, stream.width, stream.height, frames)
        if not 0 < header.width * header.height <= max_pixels:
            raise ValueError(f"declares {header.width}x{header.height}, not 1 to {max_pixels} pixels")
        if header.frames > max_frames:
            raise ValueError(f"declares {header.frames} frames, more than {max_frames}")
        yield container, stream, header


def video_header(data: bytes, max_pixels: int, max_frames: int) -> VideoHeader:
    """The header of mp4 bytes, checked (see `video_from_bytes`) before a frame is decoded."""
    with _open_video(data, max_pixels, max_frames) as (_, _, header):
        return header


def video_from_bytes(data: bytes, size: tuple[int, int], keep: int, max_pixels: int, max_frames: int) -> np.ndarray:
    """An mp4's first `keep` frames, each scaled to cover `size` (height, width) and centre-cropped
    as soon as it is decoded -> [T <= keep, height, width, 3] uint8: what `resize_and_crop` makes of
    `read_video`'s frames, holding one full-size frame at a time instead of all of them.

    Checked before a frame is decoded: the container is an mp4 with a video stream of VIDEO_CODECS,
    declaring at most `max_pixels` pixels a frame and at most `max_frames` frames; the decoder
    refuses frames over `max_pixels` too, should the stream change size midway. ValueError says
    what is wrong."""
    with _open_video(data, max_pixels, max_frames) as (container, stream, header):
        stream.codec_context.options = {"max_pixels": str(max_pixels)}
        out = np.empty((min(keep, header.frames or keep), *size, 3), np.uint8)
        count, reformatter = 0, VideoReformatter()
        try:
            for frame in container.decode(stream):
                out[count] = resize_and_crop(reformatter.reformat(frame, format="rgb24").to_ndarray(), size)
                count += 1
                if count == len(out):
                    break
        except av.FFmpegError as err:
            raise ValueError(f"not a readable video ({err})") from None
    if not count:
        raise ValueError("has no frames")
    return out[:count]


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
    """`samples` at `rate` -> float32 at `target` (polyphase, the filter bounded: see
    MAX_RESAMPLE_TERM)."""
    if rate == target:
        return samples.astype(np.float32)
    up, down = resample_ratio(rate, target)
    return resample_poly(samples, up, down).astype(np.float32)


def resample_ratio(rate: int, target: int) -> tuple[int, int]:
    """(up, down) for resample_poly: target/rate in lowest terms or, when a term exceeds
    MAX_RESAMPLE_TERM, the nearest fraction whose terms do not. Ratios beyond 1:MAX_RESAMPLE_TERM
    have no such fraction near them: ValueError."""
    exact = Fraction(int(target), int(rate))
    if max(exact.numerator, exact.denominator) <= MAX_RESAMPLE_TERM:
        return exact.numerator, exact.denominator
    if not Fraction(1, MAX_RESAMPLE_TERM) <= exact <= MAX_RESAMPLE_TERM:
        raise ValueError(f"resample: {rate} Hz to {target} Hz is a ratio beyond 1:{MAX_RESAMPLE_TERM}")
    near = exact.limit_denominator(MAX_RESAMPLE_TERM) if exact < 1 else 1 / (1 / exact).limit_denominator(MAX_RESAMPLE_TERM)
    return near.numerator, near.denominator


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
