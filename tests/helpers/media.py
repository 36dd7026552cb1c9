"""Request media as bytes: a PNG reference image and a WAV speech clip, for the serving tests."""

import io

import numpy as np
import soundfile
from PIL import Image


def png_bytes(height=90, width=120, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes(seconds=0.5, rate=22050) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.3 * np.sin(2 * np.pi * 180 * t), rate, format="WAV")
    return buffer.getvalue()
