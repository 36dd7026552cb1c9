"""Shared fixtures for the evaluation tests: a small synthetic dataset at the tiny preset's size."""

from __future__ import annotations

from pathlib import Path

import pytest

from interactavatar.config import preset
from interactavatar.data.synth import SynthSpec, synthesize
from interactavatar.evaluate.truth import ClipTruth, load_truth


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve clips at 64x64, 5 frames (clip 2 is the test split). Treat as read-only."""
    root = tmp_path_factory.mktemp("eval-data") / "dataset"
    synthesize(root, num_clips=12, seed=0, spec=SynthSpec(width=64, height=64, num_frames=5))
    return root


@pytest.fixture(scope="session")
def truths(tiny_dataset: Path) -> list[ClipTruth]:
    """Every clip of the tiny dataset at the tiny preset's sizes (video 64x64, motion 32x32)."""
    config = preset("tiny")
    return [load_truth(path, config) for path in sorted(p for p in tiny_dataset.iterdir() if p.is_dir())]
