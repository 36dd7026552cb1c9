"""Shared fixtures for the data tests: small synthetic datasets, made once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from interactavatar.data.synth import SynthSpec, synthesize


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four clips at the demo preset's size (128x128, 17 frames, 25 fps). Treat as read-only."""
    root = tmp_path_factory.mktemp("demo") / "dataset"
    synthesize(root, num_clips=4, seed=7, spec=SynthSpec())
    return root


@pytest.fixture()
def dataset_copy(demo_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the demo dataset, free to corrupt."""
    target = tmp_path / "dataset"
    shutil.copytree(demo_dataset, target)
    return target
