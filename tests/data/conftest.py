"""Shared fixtures for the data tests: small synthetic datasets, made once per session, and the
repository as it stands, committed in a scratch git repository (for DVC's view of it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.datasets import DEMO, make_dataset
from helpers.repo_state import commit_repository_state, tool_environment


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four clips at the demo preset's size (176x176, 17 frames, 25 fps), seed 7. Treat as read-only."""
    return make_dataset(tmp_path_factory.mktemp("demo") / "dataset", num_clips=4, seed=7, spec=DEMO)


@pytest.fixture()
def dataset_copy(demo_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the demo dataset, free to corrupt."""
    target = tmp_path / "dataset"
    shutil.copytree(demo_dataset, target)
    return target


@pytest.fixture()
def repo_state(tmp_path: Path) -> Path:
    """tmp_path/repo: the repository as a commit would take it now, committed in a new git repository."""
    return commit_repository_state(tmp_path / "repo", tool_environment(tmp_path))
