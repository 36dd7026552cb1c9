"""Register a model directory by MLflow alone (no evaluation, no gate), as the registry's `register`
logs it, and make it the champion: for tests about what comes after registration (warm starts,
LoRA bases, serving copies), not about the gate."""

import shutil
import tempfile
from pathlib import Path

import mlflow

from interactavatar.config import EXPERIMENT, MODEL_NAME
from interactavatar.io.mlflow_store import experiment_id, sqlite_path


def register_as_champion(model_dir: Path, tracking: str) -> str:
    """`model_dir` as a new version of MODEL_NAME in the SQLite store `tracking`, holding the
    champion alias; returns the version. A client bound to that store, and the experiment's
    artifact folder named beside it: never mlflow's process-wide state, which an earlier test may
    have pointed at a server."""
    client = mlflow.MlflowClient(tracking, tracking)
    artifacts = (sqlite_path(tracking).parent / "artifacts").as_uri()
    run = client.create_run(experiment_id(client, EXPERIMENT, artifacts))
    with tempfile.TemporaryDirectory() as staging:
        shutil.copytree(model_dir, f"{staging}/model",
                        ignore=shutil.ignore_patterns("checkpoints", "mlflow_run_id", "init", "init.json"))
        client.log_artifacts(run.info.run_id, f"{staging}/model", artifact_path="model")
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name='{MODEL_NAME}'"):
        client.create_registered_model(MODEL_NAME)
    version = str(client.create_model_version(MODEL_NAME, f"{run.info.artifact_uri}/model", run.info.run_id).version)
    client.set_registered_model_alias(MODEL_NAME, "champion", version)
    return version
