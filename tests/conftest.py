"""Fixtures every folder of tests may use: loopback servers (S3, S3 + MLflow) and a tiny model directory.

Shared code lives in tests/helpers (`from helpers.<module> import ...`), fixtures in the conftest.py files.
"""

import os

import pytest
from helpers.local_stack import running_local_stack

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def isolated_mlflow_uris():
    """Each test starts with MLflow following the environment alone, and leaves the environment's
    MLflow URIs as it found them. MLflow's fluent `set_tracking_uri`/`set_registry_uri` (used by
    in-process training stages and some tests) keep a process-wide URI that outranks the
    environment, and also write it into os.environ, where every later child process reads it: one
    test's store then became another's registry (a benchmark resolved its base on a test's
    server; a demo run searched a stale SQLite registry and found no version)."""
    import mlflow.tracking._model_registry.utils as registry_state
    import mlflow.tracking._tracking_service.utils as tracking_state

    before = {name: os.environ.get(name) for name in MLFLOW_URI_VARIABLES}
    tracking_state._tracking_uri = registry_state._registry_uri = None
    yield
    tracking_state._tracking_uri = registry_state._registry_uri = None
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """S3 (weed mini) + an MLflow server with artifacts on it, on loopback, shared by a session."""
    with running_local_stack(tmp_path_factory.mktemp("local-stack")) as exports:
        yield exports


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A bare S3 server (weed mini) on loopback for a session: endpoint, keys, `env()` exports."""
    from helpers.s3_server import running_s3_server

    with running_s3_server(tmp_path_factory.mktemp("s3-server")) as server:
        yield server


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny-preset model directory, randomly initialised (seed 0), written by `interactavatar model
    init --preset tiny` (the command is tested through it). Read-only: copy it to change it."""
    from interactavatar.cli import main

    out = tmp_path_factory.mktemp("model") / "tiny"
    assert main(["model", "init", "--preset", "tiny", "--out", str(out)]) == 0
    return out
