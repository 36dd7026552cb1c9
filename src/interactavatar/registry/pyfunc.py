"""The pyfunc loader named in a registered version's MLmodel: the version's artifact is a model
directory, so `mlflow.pyfunc.load_model("models:/interactavatar@champion")` gives a generator.

Its inputs are decoded as the endpoint decodes them (io/media's *_from_bytes, the endpoint's
default limits): the header is checked before a pixel or sample is decoded, so a small row that
declares a huge image or a 4 MHz rate costs nothing (a pyfunc can be served by `mlflow models
serve` too).

A registered version's MLmodel (`write_mlmodel`) makes the folder a complete MLflow model: the
signature with its params schema, an input example checked against it, pinned requirements, and our
package itself as the model's code (`code/interactavatar`), the folder MLflow puts first on the
import path before loading. Why code, not a requirement `interactavatar==VERSION`: the package is on no index, so only
`--env-manager local` in an environment that has it installed could resolve that line, while with
the code inside, `requirements.txt` holds only libraries from PyPI and any env manager (local,
virtualenv, uv) can rebuild what the loader needs; the version also keeps the exact code that
registered it. A process that imported the package already (ours, the tests) keeps its own copy:
MLflow only puts the folder first on the import path.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

# The distributions the loader and `predict` import, directly or through our modules (the model,
# inference and io packages, serve.contract for the option checks, diffusers for the Wan VAE, peft
# for LoRA versions); tests/registry/test_mlflow_model.py checks the list against what a real
# predict imports. mlflow itself is added by `pip_requirements`.
SERVING_DISTRIBUTIONS = ("torch", "numpy", "pandas", "pillow", "pyyaml", "einops", "safetensors", "transformers",
                         "ftfy", "diffusers", "peft", "av", "soundfile", "pyloudnorm", "scipy", "kserve")
CODE_DIR = "code"
# The input example's generation settings: a smoke test's budget, not a quality setting.
EXAMPLE_PARAMS = {"mode": "interact", "seed": 0, "steps": 2}
EXAMPLE_TEXT = "The person lifts the red cup on the left with the right hand"


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


def pip_requirements() -> list[str]:
    """`NAME==VERSION` for mlflow and each of SERVING_DISTRIBUTIONS, as installed here (the
    environment installed with constraints.txt). A local build label is dropped (torch's `+cpu`):
    the index serves the same release for the node's hardware."""
    from importlib.metadata import version

    from packaging.version import Version

    return [f"{name}=={Version(version(name)).public}" for name in ("mlflow", *SERVING_DISTRIBUTIONS)]


def input_example(model_dir: str | Path):
    """One row and the params a caller sends: a PNG at the model's video size (grey, a red square
    on the left), a WAV tone just long enough for one VAE step of frames (1 + the temporal
    compression), the sentence, and EXAMPLE_PARAMS. Small (a few KB of base64) and quick to
    generate, so `mlflow models predict` on it is a smoke test."""
    import numpy as np
    import pandas as pd
    import soundfile
    from PIL import Image

    from interactavatar.config import InteractAvatarConfig

    cfg = InteractAvatarConfig.load(Path(model_dir) / "config.yaml")
    height, width = cfg.video_size
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    image[height // 3: height // 3 + height // 4, width // 8: width // 8 + width // 4] = (200, 30, 30)
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    frames = min(cfg.num_frames, 1 + cfg.vae.temporal_compression)
    rate = cfg.audio.sample_rate
    # Half a frame more than needed: the frame count rounds the speech's duration down.
    seconds = np.arange(int((frames + 0.5) / cfg.audio.fps * rate)) / rate
    wav = io.BytesIO()
    soundfile.write(wav, 0.3 * np.sin(2 * np.pi * 180 * seconds), rate, format="WAV", subtype="PCM_16")
    row = {"image": base64.b64encode(png.getvalue()).decode(), "audio": base64.b64encode(wav.getvalue()).decode(),
           "text": EXAMPLE_TEXT}
    return pd.DataFrame([row]), dict(EXAMPLE_PARAMS)


def check_example(example, model_signature) -> None:
    """Raise (MLflow's error, naming the column or param) unless the example's row and params fit
    the signature, as MLflow enforces it on every predict."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import validate_schema
    from mlflow.types.schema import ParamSpec

    rows, params = example
    validate_schema(rows, model_signature.inputs)
    specs = {spec.name: spec for spec in model_signature.params.params}
    for name, value in params.items():
        if name not in specs:
            raise MlflowException.invalid_parameter_value(f"input example: param {name!r} is not in the signature")
        ParamSpec.validate_param_spec(value, specs[name])


def write_mlmodel(model_dir: Path, model_id: str, run_id: str) -> None:
    """Make the model directory `model_dir` (a staging copy) a complete pyfunc model of logged
    model `model_id` trained in run `run_id`: MLmodel, the input example (checked against the
    signature first), requirements.txt with python_env.yaml and conda.yaml, and our package under
    code/ (module docstring)."""
    import yaml
    from mlflow.models import Model
    from mlflow.models.utils import _save_example
    from mlflow.pyfunc import add_to_model
    from mlflow.utils.environment import _mlflow_conda_env, _PythonEnv

    import interactavatar

    # The example and environment files are written by MLflow's own private writers, the ones its
    # save_model uses: save_model itself would move our directory under a subfolder of the artifact.
    mlmodel = Model(signature=signature(), model_id=model_id, run_id=run_id)
    example = input_example(model_dir)
    check_example(example, mlmodel.signature)
    _save_example(mlmodel, example, str(model_dir))
    requirements = pip_requirements()
    (model_dir / "requirements.txt").write_text("\n".join(requirements) + "\n")
    _PythonEnv.current().to_yaml(str(model_dir / "python_env.yaml"))
    conda = _mlflow_conda_env(additional_pip_deps=requirements, install_mlflow=False)
    (model_dir / "conda.yaml").write_text(yaml.safe_dump(conda, default_flow_style=False))
    shutil.copytree(Path(interactavatar.__file__).parent, model_dir / CODE_DIR / "interactavatar",
                    ignore=shutil.ignore_patterns("__pycache__"))
    add_to_model(mlmodel, loader_module=__name__, data=".", code=CODE_DIR, conda_env="conda.yaml",
                 python_env="python_env.yaml")
    mlmodel.save(str(model_dir / "MLmodel"))


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
