"""MLflow Model Registry: register an evaluated model, let the gate decide the champion, roll back.

A registered version's artifact is the model directory itself (config.yaml at its root, so KServe's
storage initializer can download it to /mnt/models as is) plus an `MLmodel` file that makes it a
pyfunc (`mlflow.pyfunc.load_model("models:/interactavatar@champion")` works too).

The gate (registry/gate.py) compares like with like: the metrics file must hold the new version
and the current champion scored in one evaluation (`evaluate --baseline models:/NAME/VERSION`), or,
before any champion exists, the new version and the untrained floor. A file scored against anything
else is refused, naming both versions. The registry never compares numbers from two evaluations:
each version records its own decision (tags `gate.passed`, `gate.baseline_version`, the intervals),
and the champion is a function of those records, not of who wrote first: walking the versions in
order, a version takes the title if it passed against exactly the version holding it at that point
(the floor, "", for the first); rolled-back versions are skipped. The `champion` alias is the end
of that chain and `previous` the one before. Every registration recomputes the chain after writing
its own version and again whenever it sees a version newer than its own view, so concurrent
registrations converge on the same champion: of two scored against the same champion, the first
registered wins and the other is told to score against it. An alias points at exactly one version,
and it is moved, never deleted, so there are never two champions and never none once one exists.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from interactavatar.config import EXPERIMENT, MODEL_NAME
from interactavatar.io.model_refs import read_lineage, registry_name, registry_version
from interactavatar.registry.gate import Decision, Gate

CHAMPION, PREVIOUS = "champion", "previous"
METRIC_TAG = "metric."
LINEAGE_TAG = "lineage."  # + each field of the model directory's Lineage (origin, parent, parent_version)
# The version's gate decision: gate.passed ("true"/"false"), gate.baseline_version (the champion it
# was scored against; "" for the floor), gate.reason, gate.spec, gate.level, gate.<metric>.<bound>.
GATE_TAG = "gate."
EVAL_SET_TAG = "eval_set."  # the evaluation's data_rev, split and number of clips
ROLLED_BACK_TAG = "rolled_back"


def _client(tracking_uri: str | None):
    import mlflow

    from interactavatar.train.tracking import tracking_uri as default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient()


def champion_chain(client, name: str) -> list:
    """The versions that held the title, oldest first: each passed the gate against the one before
    it (the first against the floor)."""
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    chain: list = []
    for version in versions:
        if version.tags.get(ROLLED_BACK_TAG) == "true" or version.tags.get(f"{GATE_TAG}passed") != "true":
            continue
        if version.tags.get(f"{GATE_TAG}baseline_version", "") == (str(chain[-1].version) if chain else ""):
            chain.append(version)
    return chain


def champion_version(name: str = MODEL_NAME, tracking_uri: str | None = None, client=None) -> str | None:
    """The version holding `name`'s champion alias now; None when there is none (no such model yet,
    or no version promoted). Any other registry error (unreachable, unauthorised) is raised."""
    from mlflow.exceptions import MlflowException

    client = client or _client(tracking_uri)
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


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


def _reconcile(client, name: str) -> str | None:
    """Point the aliases at the chain's last two versions; returns the champion's version.

    Repeats while versions appear during the write: a version created after our last look will
    run its own reconcile, which sees everything we saw.
    """
    while True:
        newest = _newest_version(client, name)
        chain = champion_chain(client, name)
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
    """The new version, the champion after it was written, whether the new version took the title,
    and why (the gate's reason, or the version that took the title first)."""

    name: str
    version: str
    champion: str | None
    promoted: bool
    run_id: str
    reason: str


def _read_metrics(metrics_file: Path) -> dict:
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file}: metrics file not found")
    try:
        metrics = json.loads(metrics_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{metrics_file}: not valid JSON: {err}") from err
    for key in ("model", "per_clip", "eval_set"):
        if key not in metrics:
            raise ValueError(f"{metrics_file}: no {key!r}: not a metrics.json from `interactavatar evaluate`")
    return metrics


def _per_clip(metrics: dict, metrics_file: Path, system: str, gate: Gate) -> list[dict]:
    """One system's per-clip scores, each gate metric a finite number or None (undefined on the clip)."""
    if any(system not in clip for clip in metrics["per_clip"]):
        hint = " (evaluated with --no-floor)" if system == "floor" else ""
        raise ValueError(f"{metrics_file}: per_clip has no {system!r} scores{hint}")
    scores = [clip[system] for clip in metrics["per_clip"]]
    for clip, score in zip(metrics["per_clip"], scores, strict=True):
        for metric in gate.metrics:
            value = score.get(metric.name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{metrics_file}: per_clip {clip.get('clip_id')!r}: {system} {metric.name} is "
                                 f"{value!r}, not a finite number")
    return scores


def _baseline_of(metrics: dict, metrics_file: Path, name: str, champion: str | None) -> str:
    """The system the new version is compared with: the current champion, which the file must have
    been scored against, or the untrained floor when there is no champion yet."""
    if champion is None:
        return "floor"
    scored = metrics.get("comparison", {}).get("baseline")
    if scored and scored.get("reference", "").startswith("models:/") and \
            registry_name(scored["reference"]) == name and str(scored.get("version")) == champion:
        return "baseline"
    against = (f"{scored.get('reference')} (version {scored.get('version') or 'none'})" if scored
               else "no baseline (evaluated without --baseline)")
    raise ValueError(f"{metrics_file}: scored against {against}, but the champion of {name} is version {champion}: "
                     f"the gate only compares a new version with the current champion in one evaluation; run "
                     f"`interactavatar evaluate --baseline models:/{name}/{champion}` again")


def _check_data_revision(metrics: dict, metrics_file: Path, tags: dict[str, str]) -> None:
    """The evaluation's held-out split must come from the data the version is recorded as tuned on."""
    evaluated, trained = metrics["eval_set"].get("data_rev") or "", tags.get("data_rev") or ""
    if evaluated and trained and not (evaluated.startswith(trained) or trained.startswith(evaluated)):
        raise ValueError(f"{metrics_file}: evaluated on data revision {evaluated}, but the version is tagged as "
                         f"trained on data_rev {trained}: score it on its own data's held-out split")


def _gate_tags(gate: Gate, decision: Decision, baseline_version: str, eval_set: dict) -> dict[str, str]:
    tags = {f"{GATE_TAG}passed": str(decision.promote).lower(), f"{GATE_TAG}baseline_version": baseline_version,
            f"{GATE_TAG}reason": decision.reason, f"{GATE_TAG}spec": gate.spec(), f"{GATE_TAG}level": f"{gate.level:g}",
            f"{EVAL_SET_TAG}data_rev": str(eval_set.get("data_rev", "")), f"{EVAL_SET_TAG}split": str(eval_set.get("split", "")),
            f"{EVAL_SET_TAG}clips": str(len(eval_set.get("clip_ids", [])))}
    tags.update({f"{GATE_TAG}{metric}.{bound}": f"{interval[bound]:.6g}"
                 for metric, interval in decision.intervals.items() for bound in ("mean", "low", "high")
                 if interval[bound] is not None})
    return tags


def register(model_dir: str | Path, metrics_file: str | Path, name: str = MODEL_NAME, gate: Gate | None = None,
             tags: dict[str, str] | None = None, tracking_uri: str | None = None) -> Registration:
    """Log the model directory, register it as a new version tagged with its metrics, lineage and
    the gate's decision against the current champion (or the floor), and recompute the champion."""
    import mlflow

    gate = gate or Gate.parse()
    model_dir, metrics_file, tags = Path(model_dir), Path(metrics_file), dict(tags or {})
    if not (model_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (config.yaml missing)")
    metrics = _read_metrics(metrics_file)
    flat = {k: float(v) for k, v in metrics["model"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    not_finite = sorted(k for k, v in flat.items() if not math.isfinite(v))
    if not_finite:
        raise ValueError(f"{metrics_file}: model metric(s) {not_finite} are not finite numbers")
    _check_data_revision(metrics, metrics_file, tags)

    client = _client(tracking_uri)
    champion = champion_version(name, client=client)
    baseline_system = _baseline_of(metrics, metrics_file, name, champion)
    decision = gate.decide(_per_clip(metrics, metrics_file, "model", gate),
                           _per_clip(metrics, metrics_file, baseline_system, gate),
                           against_floor=baseline_system == "floor")
    baseline_version = champion or ""
    tags.update({f"{LINEAGE_TAG}{k}": v for k, v in asdict(read_lineage(model_dir)).items()})
    mlflow.set_experiment(EXPERIMENT)
    with tempfile.TemporaryDirectory() as staging, mlflow.start_run(run_name="register", tags=tags) as run:
        mlflow.log_metrics(flat)
        mlflow.log_metrics({f"gate_{metric}_{bound}": interval[bound]
                            for metric, interval in decision.intervals.items() for bound in ("mean", "low", "high")
                            if interval[bound] is not None})
        mlflow.log_artifacts(str(_model_artifact(model_dir, Path(staging))), artifact_path="model")
    version_tags = {**tags, **{f"{METRIC_TAG}{k}": str(v) for k, v in flat.items()},
                    **_gate_tags(gate, decision, baseline_version, metrics["eval_set"])}
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name, tags=version_tags).version)
    now = _reconcile(client, name)
    reason = decision.reason
    if decision.promote and now != version:
        reason = (f"passed against {f'version {baseline_version}' if baseline_version else 'the floor'}, but "
                  f"version {now} took the title first; evaluate again with --baseline models:/{name}/{now}")
    return Registration(name, version, now, now == version, run.info.run_id, reason)


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


def rollback(name: str = MODEL_NAME, tracking_uri: str | None = None) -> str:
    """Retire the champion (tagged rolled back, kept in the registry) and restore the one before;
    later versions must then be scored against the restored champion."""
    client = _client(tracking_uri)
    champion = client.get_model_version_by_alias(name, CHAMPION)
    chain = champion_chain(client, name)
    if len(chain) < 2:
        raise ValueError(f"registry: {name} has no previous champion to roll back to")
    client.set_model_version_tag(name, champion.version, ROLLED_BACK_TAG, "true")
    return _reconcile(client, name)


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
