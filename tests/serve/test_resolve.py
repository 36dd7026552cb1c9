"""Model references: a directory, a folder that nests one, and an MLflow registry alias."""

import asyncio
import shutil

import pytest
from kserve.model_repository import ModelRepository

from interactavatar.serve.predictor import InteractAvatarModel
from interactavatar.serve.resolve import resolve_model_dir
from interactavatar.serve.server import ServingDataPlane


def test_directory_and_nested_directory(model_dir, tmp_path):
    assert resolve_model_dir(str(model_dir)) == model_dir
    nested = tmp_path / "artifacts" / "model"
    shutil.copytree(model_dir, nested)
    # The shallowest config.yaml beside model.safetensors, not the VAE's inside it.
    assert resolve_model_dir(str(tmp_path)) == nested
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        resolve_model_dir(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no model directory"):
        resolve_model_dir(str(tmp_path / "empty"))


@pytest.mark.integration
def test_models_uri_resolves_through_a_local_mlflow_registry(model_dir, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")  # other tests may have set another
    mlflow.set_experiment("serve-test")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
    client = MlflowClient()
    client.create_registered_model("interactavatar")
    version = client.create_model_version("interactavatar", f"{run.info.artifact_uri}/model", run.info.run_id)
    client.set_registered_model_alias("interactavatar", "champion", version.version)

    resolved = resolve_model_dir("models:/interactavatar@champion", tmp_path / "download")
    assert resolved.is_relative_to(tmp_path / "download")
    assert (resolved / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_server_is_ready_only_once_the_model_is_loaded(model_dir):
    repository = ModelRepository()
    model = InteractAvatarModel("interactavatar", str(model_dir))
    repository.update(model)
    dataplane = ServingDataPlane(model_registry=repository)
    model.start()  # kserve's default would mark it ready here
    assert not asyncio.run(dataplane.ready())
    model.load()
    assert asyncio.run(dataplane.ready())
