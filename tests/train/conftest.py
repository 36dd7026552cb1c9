import os

import pytest
from train_helpers import spec

from interactavatar.data.synth import SynthSpec, synthesize
from interactavatar.train.stages import run_stage


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Eight synthetic clips at the tiny preset's size (64x64, 5 frames). Read-only."""
    root = tmp_path_factory.mktemp("tiny-data") / "dataset"
    synthesize(root, num_clips=8, seed=3, spec=SynthSpec(width=64, height=64, num_frames=5))
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_dataset):
    """vae -> pim + audio -> joint, a few steps each, tracked in one SQLite store. Read-only."""
    root = tmp_path_factory.mktemp("stages")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    try:
        run_stage(spec("vae", tiny_dataset, root / "vae", steps=6))
        run_stage(spec("pim", tiny_dataset, root / "pim", vae=root / "vae"))
        run_stage(spec("audio", tiny_dataset, root / "audio", vae=root / "vae"))
        run_stage(spec("joint", tiny_dataset, root / "joint", vae=root / "vae", pim=root / "pim", audio=root / "audio"))
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    return root


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri
