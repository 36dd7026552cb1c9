"""MLflow Model Registry: register an evaluated model, gate it against the champion, roll back.

A registered version's artifact is the model directory itself (config.yaml at its root, so KServe's
storage initializer can download it to /mnt/models as is) plus an `MLmodel` file that makes it a
pyfunc (`mlflow.pyfunc.load_model("models:/interactavatar@champion")` works too).

The gate is a function of the registry's contents, not of who registered first: walking the
versions in order, a version displaces the current champion only if it beats it on every gate
metric by the margin; versions rolled back are skipped. The `champion` alias is the end of that
chain and `previous` the one before. Every registration recomputes the chain after writing its
own version and again whenever it sees a version newer than its own view, so concurrent
registrations converge on the same champion; an alias points at exactly one version, and it is
moved, never deleted, so there are never two champions and never none once one exists.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from interactavatar.config import EXPERIMENT, MODEL_NAME
from interactavatar.io.model_refs import read_lineage, registry_name, registry_version
from interactavatar.registry.gate import Gate

CHAMPION, PREVIOUS = "champion", "previous"
METRIC_TAG = "metric."
LINEAGE_TAG = "lineage."  # + each field of the model directory's Lineage (origin, parent, parent_version)
ROLLED_BACK_TAG = "rolled_back"


def _client(tracking_uri: str | None):
    import mlflow

    from interactavatar.train.tracking import tracking_uri as default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient()


def _version_metrics(version) -> dict[str, float]:
    return {k[len(METRIC_TAG):]: float(v) for k, v in version.tags.items() if k.startswith(METRIC_TAG)}


def champion_chain(client, name: str, gate: Gate) -> list:
    """The versions that held the title, oldest first, as if registered one at a time in order."""
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    chain: list = []
    for version in versions:
        if version.tags.get(ROLLED_BACK_TAG) == "true":
            continue
        if not chain or gate.beats(_version_metrics(version), _version_metrics(chain[-1])):
            chain.append(version)
    return chain


def _newest_version(client, name: str) -> int:
    return max((int(v.version) for v in client.search_model_versions(f"name='{name}'")), default=0)


def _set_alias(client, name: str, alias: str, version) -> None:
    """Point `alias` at `version`. Retried: an MLflow server inserts a new alias without a lock, so
    two first-time setters can collide on its unique key; the loser's retry is an update."""
    from mlflow.exceptions import MlflowException

    for attempt in range(5):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def _reconcile(client, name: str, gate: Gate) -> str | None:
    """Point the aliases at the chain's last two versions; returns the champion's version.

    Repeats while versions appear during the write: a version created after our last look will
    run its own reconcile, which sees everything we saw.
    """
    while True:
        newest = _newest_version(client, name)
        chain = champion_chain(client, name, gate)
        if chain:
            _set_alias(client, name, CHAMPION, chain[-1].version)
            if len(chain) > 1:
                _set_alias(client, name, PREVIOUS, chain[-2].version)
        if _newest_version(client, name) == newest:
            # Versions come back as int from SQLite and as str over HTTP.
            return str(chain[-1].version) if chain else None


def _model_artifact(model_dir: Path, staging: Path) -> Path:
    """The model directory plus an MLmodel file that makes it loadable as a pyfunc."""
    from mlflow.models import Model
    from mlflow.pyfunc import add_to_model

    artifact = staging / "model"
    # Not the training stage's own files: its checkpoints, run id, and a warm start's init download.
    shutil.copytree(model_dir, artifact, ignore=shutil.ignore_patterns("checkpoints", "mlflow_run_id", "init",
                                                                       "init.json"))
    mlmodel = Model()
    add_to_model(mlmodel, loader_module="interactavatar.registry.pyfunc", data=".")
    mlmodel.save(str(artifact / "MLmodel"))
    return artifact


def lineage_tags(model_dir: str | Path, data_rev: str, pipeline_run_id: str, tracking_uri: str | None = None
                 ) -> dict[str, str]:
    """A version's lineage: the data revision, the dataset's content hash and the id of the run that
    trained the model (kept in its folder as `mlflow_run_id`), and the pipeline run above it."""
    path = Path(model_dir) / "mlflow_run_id"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the training run's id is missing (not a trained model directory)")
    training_run_id = path.read_text().strip()
    training_tags = _client(tracking_uri).get_run(training_run_id).data.tags
    return {"data_rev": data_rev, "dataset_hash": training_tags.get("dataset_hash", ""),
            "training_run_id": training_run_id, "pipeline_run_id": pipeline_run_id}


@dataclass
class Registration:
    name: str
    version: str
    champion: str | None
    promoted: bool
    run_id: str


def register(model_dir: str | Path, metrics_file: str | Path, name: str = MODEL_NAME, gate: Gate | None = None,
             tags: dict[str, str] | None = None, tracking_uri: str | None = None) -> Registration:
    """Log the model directory, register it as a new version tagged with its metrics and lineage,
    and let the gate decide the champion."""
    import mlflow

    gate = gate or Gate()
    model_dir, metrics_file = Path(model_dir), Path(metrics_file)
    if not (model_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (config.yaml missing)")
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file}: metrics file not found")
    try:
        metrics = json.loads(metrics_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{metrics_file}: not valid JSON: {err}") from err
    flat = {k: float(v) for k, v in metrics.get("model", metrics).items() if isinstance(v, (int, float))}
    missing = [m for m in gate.metrics if m not in flat]
    if missing:
        raise ValueError(f"{metrics_file}: gate metric(s) {missing} missing")

    client = _client(tracking_uri)
    tags = {**(tags or {}), **{f"{LINEAGE_TAG}{k}": v for k, v in asdict(read_lineage(model_dir)).items()}}
    mlflow.set_experiment(EXPERIMENT)
    with tempfile.TemporaryDirectory() as staging, mlflow.start_run(run_name="register", tags=tags) as run:
        mlflow.log_metrics(flat)
        mlflow.log_artifacts(str(_model_artifact(model_dir, Path(staging))), artifact_path="model")
    version_tags = {**tags, **{f"{METRIC_TAG}{k}": str(v) for k, v in flat.items()}}
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name, tags=version_tags)
    champion = _reconcile(client, name, gate)
    return Registration(name, str(version.version), champion, champion == str(version.version), run.info.run_id)


def lineage(version: str, name: str = MODEL_NAME, tracking_uri: str | None = None) -> list[dict[str, str]]:
    """The chain from `version` (a number or an alias) back to its first ancestor, newest first:
    each entry's version, data revision and origin; the last entry's origin is "scratch",
    "release", or "model" with a parent outside the registry (a directory or URI, in `parent`)."""
    client = _client(tracking_uri)
    version = str(version) if str(version).isdigit() else registry_version(f"models:/{name}@{version}")[1]
    chain: list[dict[str, str]] = []
    while True:
        if any(entry["version"] == str(version) for entry in chain):
            raise ValueError(f"registry: {name} version {version}'s lineage loops back on itself")
        tags = client.get_model_version(name, str(version)).tags
        entry = {"version": str(version), "data_rev": tags.get("data_rev", ""),
                 **{field: tags.get(f"{LINEAGE_TAG}{field}", "") for field in ("origin", "parent", "parent_version")}}
        entry["origin"] = entry["origin"] or "scratch"  # registered before lineage was recorded
        chain.append(entry)
        if not entry["parent_version"]:
            return chain
        if registry_name(entry["parent"]) != name:
            return chain  # another registered model's version: named in `parent`, not followed
        version = entry["parent_version"]


def rollback(name: str = MODEL_NAME, gate: Gate | None = None, tracking_uri: str | None = None) -> str:
    """Retire the champion (tagged rolled back, kept in the registry) and restore the one before."""
    client = _client(tracking_uri)
    champion = client.get_model_version_by_alias(name, CHAMPION)
    chain = champion_chain(client, name, gate or Gate())
    if len(chain) < 2:
        raise ValueError(f"registry: {name} has no previous champion to roll back to")
    client.set_model_version_tag(name, champion.version, ROLLED_BACK_TAG, "true")
    return _reconcile(client, name, gate or Gate())


def resolve(uri: str, tracking_uri: str | None = None, artifacts_destination: str | None = None) -> str:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> the artifact URI (s3://... on MinIO).

    A server that proxies artifacts hands out `mlflow-artifacts:/PATH`; KServe's storage
    initializer needs the bucket URI behind it, so such URIs are rebased onto
    `artifacts_destination` (default: MLFLOW_ARTIFACTS_DESTINATION, the server's
    --artifacts-destination).
    """
    client = _client(tracking_uri)
    if not uri.startswith("models:/"):
        raise ValueError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name, version = registry_version(uri)
    location = client.get_model_version_download_uri(name, version)
    destination = artifacts_destination or os.environ.get("MLFLOW_ARTIFACTS_DESTINATION")
    if location.startswith("mlflow-artifacts:") and destination:
        path = location.removeprefix("mlflow-artifacts:").lstrip("/")
        return f"{destination.rstrip('/')}/{path}"
    return location
