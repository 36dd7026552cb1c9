"""Model references: a directory, a folder that nests one, and an MLflow registry alias; lineage records."""

import shutil

import pytest

from interactavatar.io.model_refs import (
    Lineage,
    read_lineage,
    resolve_model,
    resolve_model_dir,
    write_lineage,
)


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
    mlflow.set_experiment("serve-test")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
    client = MlflowClient()
    client.create_registered_model("interactavatar")
    version = client.create_model_version("interactavatar", f"{run.info.artifact_uri}/model", run.info.run_id)
    client.set_registered_model_alias("interactavatar", "champion", version.version)

    resolved = resolve_model("models:/interactavatar@champion", tmp_path / "download")
    assert resolved.path.is_relative_to(tmp_path / "download") and resolved.version == str(version.version)
    assert (resolved.path / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    # The alias is resolved once: the lineage names the version, whatever the alias points at later.
    assert resolved.as_parent() == Lineage("model", "models:/interactavatar@champion", str(version.version))
    with pytest.raises(ValueError, match="no version of 'interactavatar' under alias 'nobody'"):
        resolve_model("models:/interactavatar@nobody", tmp_path / "download2")


def test_lineage_round_trips_and_refuses_nonsense(tmp_path):
    assert read_lineage(tmp_path) == Lineage("scratch")  # written before lineage was recorded
    record = Lineage("model", "models:/interactavatar@champion", "7")
    write_lineage(tmp_path, record)
    assert read_lineage(tmp_path) == record and record.describe() == "version 7 (models:/interactavatar@champion)"
    with pytest.raises(ValueError, match="origin 'model' with parent ''"):
        Lineage("model")
    (tmp_path / "lineage.json").write_text('{"origin": "forged"}')
    with pytest.raises(ValueError, match=r"lineage.json: not a lineage record"):
        read_lineage(tmp_path)
