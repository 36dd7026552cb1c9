"""`DVCDatasetSource`: an MLflow dataset source for data versioned with DVC (a git repository, a
revision, a path), so that a training run's dataset input says where its data came from and
`mlflow.data.get_source(run_input)` gives it back, with `load()` fetching the data again.

The package's `mlflow.dataset_source` entry point names this class, so MLflow registers it in any
process where the package is installed. MLflow loads its entry points while `mlflow.data` is first
being imported, so this module must never be what first imports `mlflow.data` (it would be half
imported when MLflow asks for the class, and MLflow would warn on stderr): code that uses it
imports it through `interactavatar.train.tracking`, whose imports reach `mlflow.data` (third-party
imports come first) before this module.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlflow.data.dataset_source import DatasetSource


class DVCDatasetSource(DatasetSource):
    """Where a dataset lives under DVC: git repository `repo` (a URL or a local path), revision `rev`
    (the commit it was resolved to) and the dataset's `path` inside it; what `dvc get REPO PATH
    --rev REV` fetches. `load()` fetches it again, into a new temporary folder."""

    def __init__(self, repo: str, rev: str, path: str):
        self.repo, self.rev, self.path = repo, rev, path

    @staticmethod
    def _get_source_type() -> str:
        return "dvc"

    def load(self) -> str:
        from interactavatar.data.versioning import fetch_dataset

        destination = Path(tempfile.mkdtemp(prefix="dvc-dataset-")) / Path(self.path).name
        fetch_dataset(self.repo, self.rev, self.path, destination)
        return str(destination)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # built from its three parts, never guessed from a string

    @classmethod
    def _resolve(cls, raw_source: Any) -> DVCDatasetSource:
        raise NotImplementedError("a DVCDatasetSource is built from its repo, rev and path")

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "rev": self.rev, "path": self.path}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DVCDatasetSource:
        return cls(source_dict["repo"], source_dict["rev"], source_dict["path"])
