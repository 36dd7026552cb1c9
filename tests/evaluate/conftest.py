"""Shared fixtures for the evaluation tests: a small synthetic dataset at the tiny preset's size."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.datasets import make_dataset

from interactavatar.config import preset
from interactavatar.evaluate.truth import ClipTruth, load_truth


@pytest.fixture(scope="session")
def eval_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve clips at the tiny preset's size (88x88, 5 frames), seed 0 (clip 2 is the test split).
    Treat as read-only."""
    return make_dataset(tmp_path_factory.mktemp("eval-data") / "dataset", num_clips=12, seed=0)


@pytest.fixture(scope="session")
def truths(eval_dataset: Path) -> list[ClipTruth]:
    """Every clip of the evaluation dataset at the tiny preset's sizes (video 88x88, motion 32x32)."""
    config = preset("tiny")
    return [load_truth(path, config) for path in sorted(p for p in eval_dataset.iterdir() if p.is_dir())]


@pytest.fixture(scope="session")
def demo_truths(tmp_path_factory: pytest.TempPathFactory) -> list[ClipTruth]:
    """Six clips at the demo preset's sizes (video 176x176, motion 64x64, 17 frames), seed 1."""
    from interactavatar.data.synth import SynthSpec, synthesize

    root = tmp_path_factory.mktemp("eval-demo-data") / "dataset"
    config = preset("demo")
    synthesize(root, num_clips=6, seed=1, spec=SynthSpec.from_config(config))
    return [load_truth(path, config) for path in sorted(p for p in root.iterdir() if p.is_dir())]
