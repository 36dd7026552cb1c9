"""The pyfunc loader named in a registered version's MLmodel: the version's artifact is a model
directory, so `mlflow.pyfunc.load_model("models:/interactavatar@champion")` gives a generator.

Its inputs are decoded as the endpoint decodes them (io/media's *_from_bytes, the endpoint's
default limits): the header is checked before a pixel or sample is decoded, so a small row that
declares a huge image or a 4 MHz rate costs nothing (a pyfunc can be served by `mlflow models
serve` too)."""

from __future__ import annotations

import base64


def signature():
    """The MLmodel's signature: the row's columns (base64 media and the sentence), the output (a
    base64 mp4 per row), and the generation options as params, so that `predict(params=...)`
    reaches the model (without a params schema MLflow drops them with a warning). A param left at
    its default (None, or [] for the face box) is the endpoint's default too."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    columns = [ColSpec("string", name) for name in ("image", "audio", "text")]
    columns += [ColSpec("string", name, required=False) for name in ("object_image", "pose_image")]
    params = [ParamSpec("mode", "string", "interact"), ParamSpec("seed", "long", 0)]
    params += [ParamSpec(name, "long", None) for name in ("steps", "num_frames")]
    params += [ParamSpec(name, "double", None) for name in ("text_scale", "audio_scale")]
    params += [ParamSpec("face_box", "double", [], (-1,))]
    return ModelSignature(inputs=Schema(columns), outputs=Schema([ColSpec("string", "video")]),
                          params=ParamSchema(params))


class InteractAvatarPyfunc:
    def __init__(self, model_dir: str):
        from interactavatar.inference.pipeline import InteractAvatarPipeline

        self.pipeline = InteractAvatarPipeline.from_pretrained(model_dir)

    def predict(self, model_input, params=None):
        """Rows with base64 `image` (PNG/JPEG), base64 `audio` (WAV) and `text`, optionally base64
        `object_image` and `pose_image` -> base64 mp4s."""
        from interactavatar.io.media import image_from_bytes, speech_from_bytes
        from interactavatar.serve.contract import ServeLimits, parse_options

        limits, sample_rate = ServeLimits(), self.pipeline.cfg.audio.sample_rate
        # Checked as the endpoint checks its options (ranges, the model's frame count, modes).
        options = parse_options({k: v for k, v in (params or {}).items() if v is not None and v != []}, limits,
                                self.pipeline.cfg).pipeline_kwargs()
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        outputs = []
        for row in rows:
            images = {name: image_from_bytes(base64.b64decode(row[name]), limits.max_image_pixels)
                      for name in ("image", "object_image", "pose_image") if isinstance(row.get(name), str) and row[name]}
            speech = speech_from_bytes(base64.b64decode(row["audio"]), sample_rate, limits.max_audio_seconds)
            result = self.pipeline(images.pop("image"), row["text"], speech, **images, **options)
            video, _ = result.to_mp4_bytes(with_motion=False)
            outputs.append(base64.b64encode(video).decode())
        return outputs


def _load_pyfunc(data_path: str) -> InteractAvatarPyfunc:
    return InteractAvatarPyfunc(data_path)
