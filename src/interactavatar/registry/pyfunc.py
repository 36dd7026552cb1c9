"""The pyfunc loader named in a registered version's MLmodel: the version's artifact is a model
directory, so `mlflow.pyfunc.load_model("models:/interactavatar@champion")` gives a generator.

Its inputs are decoded as the endpoint decodes them (io/media's *_from_bytes, the endpoint's
default limits): the header is checked before a pixel or sample is decoded, so a small row that
declares a huge image or a 4 MHz rate costs nothing (a pyfunc can be served by `mlflow models
serve` too)."""

from __future__ import annotations

import base64


class InteractAvatarPyfunc:
    def __init__(self, model_dir: str):
        from interactavatar.inference.pipeline import InteractAvatarPipeline

        self.pipeline = InteractAvatarPipeline.from_pretrained(model_dir)

    def predict(self, model_input, params=None):
        """Rows with base64 `image` (PNG/JPEG), base64 `audio` (WAV) and `text`, optionally base64
        `object_image` and `pose_image` -> base64 mp4s."""
        from interactavatar.io.media import image_from_bytes, speech_from_bytes
        from interactavatar.serve.contract import ServeLimits

        limits, sample_rate = ServeLimits(), self.pipeline.cfg.audio.sample_rate
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        outputs = []
        for row in rows:
            images = {name: image_from_bytes(base64.b64decode(row[name]), limits.max_image_pixels)
                      for name in ("image", "object_image", "pose_image") if isinstance(row.get(name), str) and row[name]}
            speech = speech_from_bytes(base64.b64decode(row["audio"]), sample_rate, limits.max_audio_seconds)
            result = self.pipeline(images.pop("image"), row["text"], speech, **images, **(params or {}))
            video, _ = result.to_mp4_bytes(with_motion=False)
            outputs.append(base64.b64encode(video).decode())
        return outputs


def _load_pyfunc(data_path: str) -> InteractAvatarPyfunc:
    return InteractAvatarPyfunc(data_path)
