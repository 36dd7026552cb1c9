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
        from interactavatar.generation import InteractAvatarPipeline

        self.pipeline = InteractAvatarPipeline.from_pretrained(model_dir)

    def predict(self, model_input, params=None):
        """Rows with base64 `image` (PNG/JPEG), base64 `audio` (WAV) and `text` -> base64 mp4s."""
        import os
        import tempfile

        from interactavatar.media import load_speech

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        outputs = []
        for row in rows:
            image = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["image"]))).convert("RGB"))
            waveform, rate = soundfile.read(io.BytesIO(base64.b64decode(row["audio"])), dtype="float32")
            with tempfile.TemporaryDirectory() as folder:
                wav = os.path.join(folder, "speech.wav")
                soundfile.write(wav, waveform, rate)
                result = self.pipeline(image, row["text"], load_speech(wav), **(params or {}))
                video = os.path.join(folder, "video.mp4")
                result.save(video)
                with open(video, "rb") as handle:
                    outputs.append(base64.b64encode(handle.read()).decode())
        return outputs


def _load_pyfunc(data_path: str) -> InteractAvatarPyfunc:
    return InteractAvatarPyfunc(data_path)
