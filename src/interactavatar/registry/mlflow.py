"""MLflow Model Registry: register an evaluated model, let the gate decide the champion, roll back.

A registered version's artifact is the model directory itself (config.yaml at its root, so KServe's
storage initializer can download it to /mnt/models as is) plus an `MLmodel` file that makes it a
complete pyfunc (`mlflow.pyfunc.load_model("models:/interactavatar@champion")`, `mlflow models
predict|serve`; registry/pyfunc.py). It is an MLflow 3 logged model: created with the run that
trained it as its source run (the model directory's `mlflow_run_id`; the registration run for a
model trained elsewhere or imported), and the version points at it by its source,
`models:/<model_id>` (MLflow's open-source registry does not store `version.model_id`), and at that
run by `version.run_id`. The evaluation's metrics are logged on the registration run against the
logged model, so the model's page shows them.

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
and it is moved, not deleted, so there are never two champions; only a rollback of the first
champion leaves none. Which gate decides is the registered model's policy (registry/policy.py),
never the caller's. On a SQLite store registrations and rollbacks take turns (io/mlflow_store.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from interactavatar.config import EXPERIMENT, MODEL_NAME
from interactavatar.io.mlflow_store import exclusive_store, experiment_id, set_with_retries
from interactavatar.io.model_refs import read_lineage, registry_answers, registry_name, registry_version
from interactavatar.registry.gate import Decision, Gate
from interactavatar.registry.policy import policy_tags, read_policy, set_policy, write_default_policy

CHAMPION, PREVIOUS = "champion", "previous"
METRIC_TAG = "metric."
LINEAGE_TAG = "lineage."  # + each field of the model directory's Lineage (origin, parent, parent_version)
# The version's gate decision: gate.passed ("true"/"false"), gate.baseline_version (the champion it
# was scored against; "" for the floor), gate.reason, gate.spec, gate.level, gate.<metric>.<bound>.
GATE_TAG = "gate."
EVAL_SET_TAG = "eval_set."  # the evaluation's data_rev, split and number of clips
ROLLED_BACK_TAG = "rolled_back"


def _store_uri(tracking_uri: str | None) -> str:
    from interactavatar.train.tracking import tracking_uri as default_tracking_uri

    return tracking_uri or default_tracking_uri()


def _client(tracking_uri: str | None):
    """A client bound to the store; the process-wide URIs stay untouched (io/mlflow_store.py)."""
    import mlflow

    uri = _store_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


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


def _remove_alias(client, name: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # not set, or the model does not exist yet
        client.delete_registered_model_alias(name, alias)


def _reconcile(client, name: str) -> str | None:
    """Point the aliases at the chain's last two versions; returns the champion's version.

    Repeats while versions appear during the write: a version created after our last look will
    run its own reconcile, which sees everything we saw.
    """
    while True:
        newest = _newest_version(client, name)
        chain = champion_chain(client, name)
        for alias, holder in ((CHAMPION, chain[-1:]), (PREVIOUS, chain[-2:-1])):
            if holder:
                set_with_retries(client.set_registered_model_alias, name, alias, holder[0].version)
            else:  # only after a rollback retired the version that held it
                _remove_alias(client, name, alias)
        if _newest_version(client, name) == newest:
            # Versions come back as int from SQLite and as str over HTTP.
            return str(chain[-1].version) if chain else None


def _model_artifact(model_dir: Path, staging: Path, model_id: str, run_id: str) -> Path:
    """The model directory plus what makes it a complete pyfunc (registry/pyfunc.py)."""
    from interactavatar.registry.pyfunc import write_mlmodel

    artifact = staging / "model"
    # Not the training stage's own files: its checkpoints, run id, and a warm start's init download.
    shutil.copytree(model_dir, artifact, ignore=shutil.ignore_patterns("checkpoints", "mlflow_run_id", "init",
                                                                       "init.json"))
    write_mlmodel(artifact, model_id, run_id)
    return artifact


@contextlib.contextmanager
def _process_tracking_uri(uri: str):
    """Point MLflow's process-wide tracking URI at `uri` for the block, leaving the environment
    alone. A SQL registry resolves a `models:/<model_id>` source with a client on that URI, not on
    the store it writes to; `mlflow.set_tracking_uri` would also rewrite MLFLOW_TRACKING_URI for
    every later child process (io/mlflow_store.py)."""
    import mlflow.tracking._tracking_service.utils as tracking_state

    previous = tracking_state._tracking_uri
    tracking_state._tracking_uri = uri
    try:
        yield
    finally:
        tracking_state._tracking_uri = previous


def _training_run(client, model_dir: Path) -> str | None:
    """The run that trained the model (its directory's `mlflow_run_id`) when this store holds it;
    None for a model with no such record, or trained against another store."""
    from mlflow.exceptions import MlflowException

    path = model_dir / "mlflow_run_id"
    if not path.is_file():
        return None
    run_id = path.read_text().strip()
    try:
        client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return run_id


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


def register(model_dir: str | Path, metrics_file: str | Path, name: str = MODEL_NAME,
             tags: dict[str, str] | None = None, tracking_uri: str | None = None) -> Registration:
    """Log the model directory, register it as a new version tagged with its metrics, lineage and
    the decision of `name`'s gate policy (registry/policy.py) against the current champion (or the
    floor), and recompute the champion. On a SQLite store, one registration at a time."""
    with exclusive_store(_store_uri(tracking_uri)):
        return _register(Path(model_dir), Path(metrics_file), name, dict(tags or {}), tracking_uri)


def _register(model_dir: Path, metrics_file: Path, name: str, tags: dict[str, str], tracking_uri: str | None
              ) -> Registration:
    from mlflow.entities import LoggedModelInput, LoggedModelOutput, Metric
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    if not (model_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (config.yaml missing)")
    metrics = _read_metrics(metrics_file)
    flat = {k: float(v) for k, v in metrics["model"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    not_finite = sorted(k for k, v in flat.items() if not math.isfinite(v))
    if not_finite:
        raise ValueError(f"{metrics_file}: model metric(s) {not_finite} are not finite numbers")
    _check_data_revision(metrics, metrics_file, tags)

    client = _client(tracking_uri)
    gate = read_policy(client, name)
    champion = champion_version(name, client=client)
    baseline_system = _baseline_of(metrics, metrics_file, name, champion)
    decision = gate.decide(_per_clip(metrics, metrics_file, "model", gate),
                           _per_clip(metrics, metrics_file, baseline_system, gate),
                           against_floor=baseline_system == "floor")
    baseline_version = champion or ""
    tags.update({f"{LINEAGE_TAG}{k}": v for k, v in asdict(read_lineage(model_dir)).items()})
    run = client.create_run(experiment_id(client, EXPERIMENT), run_name="register", tags=tags)
    source_run_id = _training_run(client, model_dir) or run.info.run_id
    now_ms = int(time.time() * 1000)
    gate_metrics = {f"gate_{metric}_{bound}": interval[bound] for metric, interval in decision.intervals.items()
                    for bound in ("mean", "low", "high") if interval[bound] is not None}
    logged = None
    try:
        logged = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=source_run_id,
                                            tags=tags)
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, now_ms, 0, model_id=logged.model_id)
                                                   for k, v in {**flat, **gate_metrics}.items()])
        with tempfile.TemporaryDirectory() as staging:
            artifact = _model_artifact(model_dir, Path(staging), logged.model_id, source_run_id)
            client.log_model_artifacts(logged.model_id, str(artifact))
        # The training run made the model (its output); a registration run that is not its source
        # run took it in to judge it.
        client.log_outputs(source_run_id, [LoggedModelOutput(logged.model_id, step=0)])
        if source_run_id != run.info.run_id:
            client.log_inputs(run.info.run_id, models=[LoggedModelInput(logged.model_id)])
    except BaseException:
        if logged is not None:
            client.finalize_logged_model(logged.model_id, "FAILED")
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    client.set_terminated(run.info.run_id)
    version_tags = {**tags, **{f"{METRIC_TAG}{k}": str(v) for k, v in flat.items()},
                    **_gate_tags(gate, decision, baseline_version, metrics["eval_set"])}
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    # The source `models:/<model_id>` is the link from a version to its logged model that MLflow's own
    # stores keep (they do not store `model_id`); the artifacts are then found at its location.
    with _process_tracking_uri(_store_uri(tracking_uri)):
        version = str(client.create_model_version(name, f"models:/{logged.model_id}", source_run_id,
                                                  tags=version_tags, model_id=logged.model_id).version)
    # What mlflow.register_model records on the logged model: its page links to the version.
    client.set_logged_model_tags(logged.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([{"name": name,
                                                                                        "version": version}])})
    write_default_policy(client, name)
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
    version = str(version) if str(version).isdigit() else registry_version(f"models:/{name}@{version}", client)[1]
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


def rollback(name: str = MODEL_NAME, tracking_uri: str | None = None) -> str | None:
    """Retire the champion (tagged rolled back, kept in the registry) and restore the one before;
    later versions must then be scored against the restored champion. Retiring the first champion
    leaves none: the `champion` alias is removed and the next version must beat the floor again.
    Returns the champion after the rollback (None: none)."""
    with exclusive_store(_store_uri(tracking_uri)):
        client = _client(tracking_uri)
        champion = champion_version(name, client=client)
        if champion is None:
            raise ValueError(f"registry: {name} has no champion to roll back")
        client.set_model_version_tag(name, champion, ROLLED_BACK_TAG, "true")
        return _reconcile(client, name)


def gate_policy(name: str = MODEL_NAME, tracking_uri: str | None = None) -> Gate:
    """The gate every registration of `name` uses now."""
    return read_policy(_client(tracking_uri), name)


def show_policy(name: str = MODEL_NAME, tracking_uri: str | None = None) -> dict[str, str]:
    """`name`'s gate policy as recorded; the default (marked unrecorded) before its first version."""
    return policy_tags(_client(tracking_uri), name)


def change_policy(name: str, gate: Gate, reason: str, tracking_uri: str | None = None) -> dict[str, str]:
    """Record `gate` as `name`'s policy (an admin change: who, when, why and the previous policy)."""
    with exclusive_store(_store_uri(tracking_uri)):
        return set_policy(_client(tracking_uri), name, gate, reason)


def resolve(uri: str, tracking_uri: str | None = None, artifacts_destination: str | None = None) -> str:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> the artifact URI (s3://... on MinIO).

    A server that proxies artifacts hands out `mlflow-artifacts:/PATH`; KServe's storage
    initializer needs the bucket URI behind it, so such URIs are rebased onto
    `artifacts_destination` (default: MLFLOW_ARTIFACTS_DESTINATION, the server's
    --artifacts-destination).
    """
    if not uri.startswith("models:/"):
        raise ValueError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    registry_answers(uri, _store_uri(tracking_uri))
    client = _client(tracking_uri)
    name, version = registry_version(uri, client)
    location = client.get_model_version_download_uri(name, version)
    destination = artifacts_destination or os.environ.get("MLFLOW_ARTIFACTS_DESTINATION")
    if location.startswith("mlflow-artifacts:") and destination:
        path = location.removeprefix("mlflow-artifacts:").lstrip("/")
        return f"{destination.rstrip('/')}/{path}"
    return location
