"""Shared fixtures for the data tests: small synthetic datasets, made once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.datasets import DEMO, make_dataset


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
