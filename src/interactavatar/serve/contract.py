"""The endpoint's contract, shared by the v1 and v2 protocols: fields, options, limits and checks.

Every refusal is a kserve `InvalidInput` (HTTP 400) whose message starts with the offending field
(`image`, `options.steps`, `instances[0].colour`, ...), so a consumer knows what to fix. Media are
decoded here, before a request waits for a generation slot, so a bad request never queues.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import json
import math
from dataclasses import asdict, dataclass, fields

import av
import numpy as np
import soundfile
from kserve.errors import InvalidInput
from PIL import Image, UnidentifiedImageError

from interactavatar.config import MODES
from interactavatar.io.media import speech_from_waveform

# object_image: the object the sentence names (the release's obj_img; none: a white image);
# pose_image: the reference's pose (its dwpose_img; none: PIM draws it from the reference).
MEDIA_FIELDS = ("image", "audio", "pose_video", "object_image", "pose_image")
FIELDS = ("image", "audio", "text", "options", "pose_video", "object_image", "pose_image")
IMAGE_FORMATS = ["PNG", "JPEG"]  # PIL is told to try only these (no EPS/PSD parsers on untrusted bytes)


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how many may be in the server at once."""

    max_payload_bytes: int = 64 * 2**20
    max_concurrency: int = 1  # generations running at once (one per GPU is the sensible default)
    max_queue: int = 4  # admitted requests waiting for a slot; more get 429
    max_audio_seconds: float = 60.0
    max_image_pixels: int = 4096 * 4096
    max_steps: int = 200
    max_frames: int = 257
    max_text_chars: int = 2000
    max_scale: float = 30.0


@dataclass(frozen=True)
class GenerationOptions:
    mode: str = "interact"
    steps: int | None = None  # None: the model's configured count
    seed: int = 0
    num_frames: int | None = None  # None: as many as the audio and the model allow
    text_scale: float | None = None
    audio_scale: float | None = None
    face_box: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1) in image pixels
    return_motion: bool = False

    def pipeline_kwargs(self) -> dict:
        """The keyword arguments of InteractAvatarPipeline.__call__ these options set."""
        kwargs = asdict(self)
        del kwargs["return_motion"]
        return kwargs


OPTION_NAMES = tuple(f.name for f in fields(GenerationOptions))


@dataclass
class GenerationRequest:
    image: np.ndarray  # [H, W, 3] uint8
    text: str
    audio: np.ndarray  # [S] float32 at the model's sample rate, loudness-normalised
    options: GenerationOptions
    pose_video: np.ndarray | None = None  # [T, H, W, 3] uint8, mode "pose" only
    object_image: np.ndarray | None = None  # [H, W, 3] uint8
    pose_image: np.ndarray | None = None  # [H, W, 3] uint8


def refuse(field: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{field}: {reason}")


def decode_base64(field: str, value) -> bytes:
    """Standard base64 (a `data:...;base64,` prefix is allowed) -> bytes."""
    if not isinstance(value, str):
        raise refuse(field, f"expected a base64 string, got {type(value).__name__}")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise refuse(field, f"malformed base64 ({err})") from None


def decode_image(data: bytes, limits: ServeLimits, field: str = "image", mode: str = "RGB") -> np.ndarray:
    """PNG or JPEG bytes of request field `field` -> [H, W, 3] uint8 ([H, W, 4] for mode "RGBA");
    the size is checked before the pixels are decoded."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            if image.width * image.height > limits.max_image_pixels:
                raise refuse(field, f"{image.width}x{image.height} is more than {limits.max_image_pixels} pixels")
            return np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise refuse(field, f"not a PNG or JPEG image ({err})") from None


def decode_audio(data: bytes, limits: ServeLimits, sample_rate: int, fps: int) -> np.ndarray:
    """WAV (or FLAC/OGG) bytes -> [S] float32 at `sample_rate`, as io.media.load_speech reads files."""
    try:
        info = soundfile.info(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise refuse("audio", f"not readable audio, expected WAV ({err})") from None
    seconds = info.frames / info.samplerate
    if seconds > limits.max_audio_seconds:
        raise refuse("audio", f"{seconds:.1f} s is longer than the limit of {limits.max_audio_seconds:g} s")
    if seconds * fps < 1:
        raise refuse("audio", f"{seconds:.3f} s is shorter than one video frame at {fps} fps")
    try:
        waveform, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise refuse("audio", f"not readable audio ({err})") from None
    return speech_from_waveform(waveform, rate, sample_rate)


def decode_video(data: bytes, limits: ServeLimits) -> np.ndarray:
    """A pose video -> [T, H, W, 3] uint8, at most `max_frames` frames decoded."""
    try:
        container = av.open(io.BytesIO(data))
    except (av.error.FFmpegError, ValueError) as err:
        raise refuse("pose_video", f"not a readable video ({err})") from None
    with container:
        if not container.streams.video:
            raise refuse("pose_video", "has no video stream")
        stream = container.streams.video[0]
        if stream.width * stream.height > limits.max_image_pixels:
            raise refuse("pose_video", f"{stream.width}x{stream.height} is more than {limits.max_image_pixels} pixels")
        try:
            frames = [f.to_ndarray(format="rgb24") for f in itertools.islice(container.decode(stream), limits.max_frames)]
        except av.error.FFmpegError as err:
            raise refuse("pose_video", f"not a readable video ({err})") from None
    if not frames:
        raise refuse("pose_video", "has no frames")
    return np.stack(frames)


def _integer(field: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise refuse(field, f"expected an integer, got {value!r}")
    if not low <= value <= high:
        raise refuse(field, f"{value} is outside [{low}, {high}]")
    return value


def _number(field: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise refuse(field, f"expected a finite number, got {value!r}")
    if not low <= value <= high:
        raise refuse(field, f"{value} is outside [{low:g}, {high:g}]")
    return float(value)


def parse_options(value, limits: ServeLimits, frame_step: int) -> GenerationOptions:
    """A JSON object (or None) -> options; `frame_step` is the VAE's temporal compression."""
    if value is None:
        return GenerationOptions()
    if not isinstance(value, dict):
        raise refuse("options", f"expected a JSON object, got {type(value).__name__}")
    for name in value:
        if name not in OPTION_NAMES:
            raise refuse(f"options.{name}", f"unknown option; expected one of {', '.join(OPTION_NAMES)}")
    parsed = {}
    if "mode" in value and value["mode"] not in MODES:
        raise refuse("options.mode", f"{value['mode']!r} is not one of {', '.join(MODES)}")
    if "steps" in value:
        parsed["steps"] = _integer("options.steps", value["steps"], 1, limits.max_steps)
    if "seed" in value:
        parsed["seed"] = _integer("options.seed", value["seed"], 0, 2**63 - 1)
    if "num_frames" in value:
        frames = _integer("options.num_frames", value["num_frames"], 1, limits.max_frames)
        if (frames - 1) % frame_step:
            raise refuse("options.num_frames", f"{frames} is not 1 + {frame_step}k")
        parsed["num_frames"] = frames
    for name in ("text_scale", "audio_scale"):
        if name in value:
            parsed[name] = _number(f"options.{name}", value[name], 0.0, limits.max_scale)
    if "face_box" in value:
        box = value["face_box"]
        if not isinstance(box, list) or len(box) != 4:
            raise refuse("options.face_box", "expected [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (_number("options.face_box", v, 0.0, 1e5) for v in box)
        if x0 >= x1 or y0 >= y1:
            raise refuse("options.face_box", "expected x0 < x1 and y0 < y1")
        parsed["face_box"] = (x0, y0, x1, y1)
    if "return_motion" in value:
        if not isinstance(value["return_motion"], bool):
            raise refuse("options.return_motion", f"expected true or false, got {value['return_motion']!r}")
        parsed["return_motion"] = value["return_motion"]
    return GenerationOptions(mode=value.get("mode", "interact"), **parsed)


def parse_options_json(text: str, limits: ServeLimits, frame_step: int) -> GenerationOptions:
    """v2 carries the options as one JSON string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise refuse("options", f"not valid JSON ({err})") from None
    return parse_options(value, limits, frame_step)


def parse_text(value, limits: ServeLimits) -> str:
    if value is None:
        raise refuse("text", "required")
    if not isinstance(value, str):
        raise refuse("text", f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise refuse("text", "is empty")
    if len(value) > limits.max_text_chars:
        raise refuse("text", f"{len(value)} characters is more than {limits.max_text_chars}")
    return value


def build_request(media: dict[str, bytes], text: str, options: GenerationOptions, limits: ServeLimits,
                  sample_rate: int, fps: int) -> GenerationRequest:
    """Decoded and checked media + text + options -> one request for the pipeline."""
    for name in ("image", "audio"):
        if name not in media:
            raise refuse(name, "required")
    if options.mode == "pose" and "pose_video" not in media:
        raise refuse("pose_video", "required with options.mode 'pose'")
    if options.mode != "pose" and "pose_video" in media:
        raise refuse("pose_video", f"only used with options.mode 'pose', not {options.mode!r}")
    return GenerationRequest(
        image=decode_image(media["image"], limits),
        text=text,
        audio=decode_audio(media["audio"], limits, sample_rate, fps),
        options=options,
        pose_video=decode_video(media["pose_video"], limits) if "pose_video" in media else None,
        # An object cut-out keeps its alpha: the pipeline pastes it on white by it, as the release does.
        object_image=decode_image(media["object_image"], limits, "object_image", "RGBA")
        if "object_image" in media else None,
        pose_image=decode_image(media["pose_image"], limits, "pose_image") if "pose_image" in media else None,
    )
