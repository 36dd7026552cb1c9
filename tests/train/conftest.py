import os

import pytest
from helpers.datasets import make_dataset
from helpers.train import spec

from interactavatar.train.stages import run_stage


@pytest.fixture(scope="session")
def train_dataset(tmp_path_factory):
    """Eight synthetic clips at the tiny preset's size (88x88, 5 frames), seed 3. Read-only."""
    return make_dataset(tmp_path_factory.mktemp("train-data") / "dataset", num_clips=8, seed=3)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, train_dataset):
    """vae -> pim + audio -> joint, a few steps each, tracked in one SQLite store. Read-only."""
    root = tmp_path_factory.mktemp("stages")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    try:
        run_stage(spec("vae", train_dataset, root / "vae", steps=6))
        run_stage(spec("pim", train_dataset, root / "pim", vae=root / "vae"))
        run_stage(spec("audio", train_dataset, root / "audio", vae=root / "vae"))
        run_stage(spec("joint", train_dataset, root / "joint", vae=root / "vae", pim=root / "pim", audio=root / "audio"))
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    return root


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri
