"""The pyfunc loader named in a registered version's MLmodel: the version's artifact is a model
directory, so `mlflow.pyfunc.load_model("models:/interactavatar@champion")` gives a generator."""

from __future__ import annotations

import base64
import io

import numpy as np
import soundfile
from PIL import Image


class InteractAvatarPyfunc:
    def __init__(self, model_dir: str):
        from interactavatar.inference.pipeline import InteractAvatarPipeline

        self.pipeline = InteractAvatarPipeline.from_pretrained(model_dir)

    def predict(self, model_input, params=None):
        """Rows with base64 `image` (PNG/JPEG), base64 `audio` (WAV) and `text`, optionally base64
        `object_image` and `pose_image` -> base64 mp4s."""
        from interactavatar.io.media import speech_from_waveform

        sample_rate = self.pipeline.cfg.audio.sample_rate
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        outputs = []
        for row in rows:
            images = {name: _image(row[name]) for name in ("image", "object_image", "pose_image")
                      if isinstance(row.get(name), str) and row[name]}
            waveform, rate = soundfile.read(io.BytesIO(base64.b64decode(row["audio"])), dtype="float32")
            result = self.pipeline(images.pop("image"), row["text"], speech_from_waveform(waveform, rate, sample_rate),
                                   **images, **(params or {}))
            video, _ = result.to_mp4_bytes(with_motion=False)
            outputs.append(base64.b64encode(video).decode())
        return outputs


def _image(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))


def _load_pyfunc(data_path: str) -> InteractAvatarPyfunc:
    return InteractAvatarPyfunc(data_path)
