"""MLflow tracking for a training stage: one run per stage (nested under a pipeline run when given),
resumed with the stage, holding the config, the data lineage, per-step metrics and the model."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import torch

from interactavatar.config import EXPERIMENT
from interactavatar.io.files import write_bytes_atomic

DEFAULT_TRACKING_URI = "sqlite:///work/mlflow.db"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else a SQLite store in the project's work folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    Path("work").mkdir(exist_ok=True)
    return DEFAULT_TRACKING_URI


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
