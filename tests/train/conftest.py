import pytest

from interactavatar.data.synth import SynthSpec, synthesize


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Eight synthetic clips at the tiny preset's size (64x64, 5 frames). Read-only."""
    root = tmp_path_factory.mktemp("tiny-data") / "dataset"
    synthesize(root, num_clips=8, seed=3, spec=SynthSpec(width=64, height=64, num_frames=5))
    return root


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri
