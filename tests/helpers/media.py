"""Request media as bytes, for the serving tests and the fuzz benchmark: good ones (a PNG image, a
WAV speech clip, an mp4 pose video) and ones whose headers lie about what they cost."""

import io
import struct
import zlib

import numpy as np
import soundfile
from PIL import Image

from interactavatar.io.media import encode_video


def png_bytes(height=90, width=120, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): refused before decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def wav_bytes(seconds=0.5, rate=22050, channels=1, subtype="PCM_16", format="WAV") -> bytes:
    """A 180 Hz tone, the same on every channel."""
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 180 * t)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.repeat(tone[:, None], channels, axis=1), rate, format=format, subtype=subtype)
    return buffer.getvalue()


def with_declared_rate(wav: bytes, rate: int) -> bytes:
    """A canonical WAV (fmt chunk first, as soundfile writes it) whose header claims `rate` Hz: the
    same bytes of samples, declared to play at another speed."""
    data = bytearray(wav)
    assert data[12:16] == b"fmt ", "expected the fmt chunk first"
    block_align = struct.unpack_from("<H", data, 32)[0]
    struct.pack_into("<II", data, 24, rate, rate * block_align)  # sample rate, byte rate
    return bytes(data)


def nan_wav(seconds=0.5, rate=16000) -> bytes:
    """A float WAV whose samples are NaN after the first tenth."""
    samples = np.full(int(rate * seconds), np.nan, np.float32)
    samples[: len(samples) // 10] = 0.1
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def mp4_bytes(frames=9, height=32, width=40) -> bytes:
    """An H.264 mp4 of a white box sliding over black: tiny on the wire whatever its size."""
    video = np.zeros((frames, height, width, 3), np.uint8)
    for index in range(frames):
        left = index * max(1, width // (2 * frames))
        video[index, height // 4: height // 2, left: left + width // 4] = 255
    return encode_video(video, 25)
