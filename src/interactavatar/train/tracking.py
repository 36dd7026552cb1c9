"""MLflow tracking for a training stage: one run per stage (nested under a pipeline run when given),
resumed with the stage, holding the config, the data lineage, per-step metrics and the model.

The data a stage trained on is the run's MLflow dataset input, so that MLflow's own views (the run's
inputs, `mlflow.data.get_source`) answer "which data?" without our tags: its source names the DVC
repository, revision and path the data came from (a `DVCDatasetSource`; a plain folder when the data
is under no git checkout), its digest is the dataset's content hash (data/versioning.py).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch
from mlflow.data.dataset_source import DatasetSource

from interactavatar.config import EXPERIMENT
from interactavatar.io.files import write_bytes_atomic
from interactavatar.train.dvc_source import DVCDatasetSource

DEFAULT_TRACKING_URI = "sqlite:///work/mlflow.db"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else a SQLite store in the project's work folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    Path("work").mkdir(exist_ok=True)
    return DEFAULT_TRACKING_URI


# MLflow stores a dataset digest in 36 characters (its SQL column and REST check): 32 hex digits of
# our sha256, 128 bits, still tell any two datasets apart; the run's `dataset_hash` tag holds all 64.
DIGEST_CHARS = 32


def _git(folder: Path, *args: str) -> str | None:
    """`git -C folder ARGS`'s output, or None where git fails (no checkout, no such remote)."""
    try:
        result = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def dataset_source(data: Path, data_rev: str | None, data_repo: str | None = None,
                   data_path: str | None = None) -> DatasetSource:
    """Where the dataset in folder `data` came from. Given `data_repo` (the pipeline fetched it from
    there): that repository, `data_path` in it, at `data_rev`. Else the git checkout holding `data`
    (its `origin` remote where it has one, so that the source means something off this machine),
    at `data_rev` or the checkout's HEAD. A folder under no checkout is its own source."""
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    if data_repo:
        return DVCDatasetSource(data_repo, data_rev or "HEAD", data_path or ".")
    folder = Path(data).resolve()
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None:
        # MLflow's "local" source by its type: resolving the bare path finds two such classes and warns.
        return get_dataset_source_from_json(json.dumps({"uri": str(folder)}), source_type="local")
    return DVCDatasetSource(_git(folder, "remote", "get-url", "origin") or top,
                            data_rev or _git(folder, "rev-parse", "HEAD") or "HEAD",
                            folder.relative_to(Path(top).resolve()).as_posix())


def flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value
    return out


def peak_memory_mb() -> dict[str, float]:
    # ru_maxrss is kilobytes on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)
    peak = {"peak_rss_mb": rss}
    if torch.cuda.is_available():
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


class StageRun:
    """A context manager around the stage's MLflow run; rank 0 logs, other ranks do nothing."""

    def __init__(self, stage: str, run_id_file: Path, parent_run_id: str | None, enabled: bool = True,
                 checkpoint_run_id: str | None = None):
        """`checkpoint_run_id`: the run recorded in the checkpoint being resumed. A stage resumed on a
        fresh disk (a restarted multi-node job restores its checkpoints from S3, not its --out) goes
        on with that run instead of opening a second one beside the killed attempt's."""
        self.stage, self.run_id_file, self.parent_run_id = stage, Path(run_id_file), parent_run_id
        self.enabled, self.checkpoint_run_id = enabled, checkpoint_run_id
        self.run = None

    def __enter__(self) -> StageRun:
        if not self.enabled:
            return self
        import mlflow

        mlflow.set_tracking_uri(tracking_uri())
        mlflow.set_experiment(EXPERIMENT)
        previous = self.run_id_file.read_text().strip() if self.run_id_file.is_file() else None
        previous = previous or self._checkpoint_run_in_store()
        if previous:
            self.run = mlflow.start_run(run_id=previous)
        else:
            self.run = mlflow.start_run(run_name=self.stage, parent_run_id=self.parent_run_id,
                                        tags={"stage": self.stage})
        self.run_id_file.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.run_id_file, self.run.info.run_id.encode())
        return self

    def _checkpoint_run_in_store(self) -> str | None:
        """The checkpoint's run id if this tracking store knows it (a checkpoint copied from another
        store starts a new run rather than failing)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        if not self.checkpoint_run_id:
            return None
        try:
            mlflow.get_run(self.checkpoint_run_id)
        except MlflowException:
            return None
        return self.checkpoint_run_id

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.run is not None:
            import mlflow

            mlflow.end_run("FINISHED" if exc_type is None else "FAILED")

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.info.run_id

    def log_params(self, params: dict) -> None:
        if self.run is None:
            return
        import mlflow

        client = mlflow.MlflowClient()
        existing = client.get_run(self.run_id).data.params
        fresh = {k: str(v)[:6000] for k, v in flatten("", params, {}).items() if k not in existing}
        if fresh:
            mlflow.log_params(fresh)

    def set_tags(self, tags: dict) -> None:
        if self.run is not None:
            import mlflow

            mlflow.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_dataset(self, source: DatasetSource, content_hash: str) -> None:
        """Record the training data as the run's dataset input ("training" context). Its name holds
        the revision: MLflow keeps one record per name and digest in an experiment, so the same bytes
        at another revision would otherwise show the first revision's source. Logged again on a
        resume, it stays one input."""
        if self.run is None:
            return
        import mlflow
        from mlflow.data.meta_dataset import MetaDataset

        name = f"{source.path}@{source.rev}" if isinstance(source, DVCDatasetSource) else source.uri
        mlflow.log_input(MetaDataset(source, name=name, digest=content_hash[:DIGEST_CHARS]), context="training")

    def log_model_directory(self, directory: Path, entries: list[str]) -> None:
        """Log the model directory's own entries (not the checkpoints beside them) under `model/`."""
        if self.run is None:
            return
        import mlflow

        for name in entries:
            path = Path(directory) / name
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=f"model/{name}")
            elif path.is_file():
                mlflow.log_artifact(str(path), artifact_path="model")
