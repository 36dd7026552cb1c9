"""A model reference -> a local model directory.

- A path (e.g. /mnt/models, where KServe's storage initializer puts the storageUri) is used as is.
- `models:/NAME@alias` or `models:/NAME/VERSION` is downloaded from the MLflow registry named by
  MLFLOW_TRACKING_URI (or MLFLOW_REGISTRY_URI).
- `s3://...` (and the other schemes kserve_storage knows) is downloaded with kserve_storage; for
  MinIO set AWS_ENDPOINT_URL, S3_USE_HTTPS=0 and the AWS key variables.

Wherever the files came from, the model directory is the shallowest folder holding config.yaml
beside model.safetensors, so a registered artifact may nest it (e.g. artifacts/model/).
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def find_model_dir(root: Path) -> Path:
    if (root / "config.yaml").is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such model directory")
    candidates = [p.parent for p in root.rglob("config.yaml") if (p.parent / "model.safetensors").is_file()]
    if not candidates:
        raise FileNotFoundError(f"{root}: holds no model directory (config.yaml beside model.safetensors)")
    return min(candidates, key=lambda p: (len(p.parts), str(p)))


def resolve_model_dir(ref: str, download_dir: str | Path | None = None) -> Path:
    """The local model directory for `ref`; downloads go to `download_dir` (default: a new temp dir)."""
    if not ref.startswith("models:/") and "://" not in ref:
        return find_model_dir(Path(ref))
    target = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="interactavatar-model-"))
    target.mkdir(parents=True, exist_ok=True)
    if ref.startswith("models:/"):
        import mlflow.artifacts

        downloaded = mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(target))
    else:
        from kserve_storage import Storage

        downloaded = Storage.download(ref, str(target))
    return find_model_dir(Path(downloaded))
