"""The endpoint's contract, shared by the v1 and v2 protocols: fields, options, limits and checks.

Every refusal is a kserve `InvalidInput` (HTTP 400) whose message starts with the offending field
(`image`, `options.steps`, `instances[0].colour`, ...), so a consumer knows what to fix. Media are
decoded here, before a request waits for a generation slot, so a bad request never queues; and
every medium's header is checked before any of them is decoded, so a bad request costs no more
than parsing its headers. The decoding itself is io.media's (`*_from_bytes`), bounded by what the
headers declare.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from kserve.errors import InvalidInput

from interactavatar.config import MODES, InteractAvatarConfig
from interactavatar.io import media as io_media

# object_image: the object the sentence names (the release's obj_img; none: a white image);
# pose_image: the reference's pose (its dwpose_img; none: PIM draws it from the reference).
MEDIA_FIELDS = ("image", "audio", "pose_video", "object_image", "pose_image")
FIELDS = ("image", "audio", "text", "options", "pose_video", "object_image", "pose_image")


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how many may be in the server at once."""

    max_payload_bytes: int = 64 * 2**20
    max_concurrency: int = 1  # generations running at once (one per GPU is the sensible default)
    max_queue: int = 4  # requests in the server beyond the running ones (read, parsed or waiting); more get 429
    # Requests one client (peer address) may have in the server at once: at the defaults one
    # client cannot take every place. Behind a proxy every client has the proxy's address.
    max_per_client: int = 4
    body_timeout_s: float = 60.0  # a request's whole body must arrive within this (64 MB: ~1.1 MB/s)
    max_audio_seconds: float = 60.0
    max_image_pixels: int = 4096 * 4096
    # The release's size rule gives an image its aspect ratio: a 1 x 4096 image would ask for a
    # video a million pixels wide.
    max_image_aspect: float = 3.0
    max_video_pixels: int = 2048 * 2048  # a pose video's frames (the decoder holds several)
    max_video_frames: int = 1500  # a pose video's declared length (a minute at 25 fps)
    max_steps: int = 200
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
    pose_video: np.ndarray | None = None  # [T, h, w, 3] uint8 at the motion size, mode "pose" only
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


def _checked(field: str, read, *args):
    """`read(*args)`, an io.media reader or header check, its ValueError refused naming `field`."""
    try:
        return read(*args)
    except ValueError as err:
        raise refuse(field, str(err)) from None


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


def parse_options(value, limits: ServeLimits, cfg: InteractAvatarConfig) -> GenerationOptions:
    """A JSON object (or None) -> options for the model configured by `cfg`."""
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
        # The model makes at most its configured count (what it was trained on): more would ask
        # it for a clip it has never seen, at a cost the limits did not plan for.
        frames = _integer("options.num_frames", value["num_frames"], 1, cfg.num_frames)
        step = cfg.vae.temporal_compression
        if (frames - 1) % step:
            raise refuse("options.num_frames", f"{frames} is not 1 + {step}k")
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


def parse_options_json(text: str, limits: ServeLimits, cfg: InteractAvatarConfig) -> GenerationOptions:
    """v2 carries the options as one JSON string."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise refuse("options", f"not valid JSON ({err})") from None
    return parse_options(value, limits, cfg)


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
                  cfg: InteractAvatarConfig) -> GenerationRequest:
    """Checked and decoded media + text + options -> one request for the model configured by `cfg`.

    Every header first (sizes, rates, channels, lengths, frame counts), then the pixels and samples.
    """
    for name in ("image", "audio"):
        if name not in media:
            raise refuse(name, "required")
    if options.mode == "pose" and "pose_video" not in media:
        raise refuse("pose_video", "required with options.mode 'pose'")
    if options.mode != "pose" and "pose_video" in media:
        raise refuse("pose_video", f"only used with options.mode 'pose', not {options.mode!r}")
    height, width = _checked("image", io_media.image_header, media["image"], limits.max_image_pixels)
    if max(height, width) > limits.max_image_aspect * min(height, width):
        raise refuse("image", f"{width}x{height} is more elongated than {limits.max_image_aspect:g}:1")
    sizes = _checked("image", cfg.sizes_for, height, width)
    if options.face_box is not None and (options.face_box[2] > width or options.face_box[3] > height):
        raise refuse("options.face_box", f"{list(options.face_box)} is not inside the {width}x{height} image")
    fps, sample_rate = cfg.audio.fps, cfg.audio.sample_rate
    audio_limits = (limits.max_audio_seconds, 1 / fps)  # at most the limit, at least one video frame
    _checked("audio", io_media.speech_header, media["audio"], *audio_limits)
    for name in ("object_image", "pose_image"):
        if name in media:
            _checked(name, io_media.image_header, media[name], limits.max_image_pixels)
    video_limits = (limits.max_video_pixels, limits.max_video_frames)
    if "pose_video" in media:
        _checked("pose_video", io_media.video_header, media["pose_video"], *video_limits)

    def image(name: str, mode: str = "RGB") -> np.ndarray | None:
        if name not in media:
            return None
        return _checked(name, io_media.image_from_bytes, media[name], limits.max_image_pixels, mode)

    # The pose video is decoded straight to the size the pipeline scales it to, and only as many
    # frames as it can use: the same frames, without holding the full-size clip.
    pose_video = None if "pose_video" not in media else _checked(
        "pose_video", io_media.video_from_bytes, media["pose_video"], sizes.motion_size,
        options.num_frames or cfg.num_frames, *video_limits)
    return GenerationRequest(
        image=image("image"),
        text=text,
        audio=_checked("audio", io_media.speech_from_bytes, media["audio"], sample_rate, *audio_limits),
        options=options,
        pose_video=pose_video,
        # An object cut-out keeps its alpha: the pipeline pastes it on white by it, as the release does.
        object_image=image("object_image", "RGBA"),
        pose_image=image("pose_image"),
    )
