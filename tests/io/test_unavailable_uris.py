"""A reference that names nothing: a registry model, version or alias that does not exist, a registry
or S3 server that does not answer. The command line prints one line naming the URI and exits 1, without a
traceback; the library raises UnavailableURI naming it.

Real parts: an MLflow SQLite store, MLflow's client and S3 clients (minio's and KServe's boto-based
storage) pointed at a loopback port nothing listens on, and the installed command run as a subprocess.
"""

import os
import socket
import subprocess
import sys

import pytest

from interactavatar.io.errors import UnavailableURI

pytestmark = pytest.mark.slow


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released): connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def environment(tmp_path, closed_port) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "S3_"))}
    return env | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port}",
        "AWS_ACCESS_KEY_ID": "local-test",
        "AWS_SECRET_ACCESS_KEY": "local-test-secret",
        "S3_USE_HTTPS": "0",
        "HOME": str(tmp_path),
    }


def run_cli(env: dict[str, str], *words: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "interactavatar.cli", *words], env=env, cwd=env["HOME"],
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(done: subprocess.CompletedProcess, command: str, uri: str) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("interactavatar ")]
    assert len(ours) == 1, done.stderr
    assert ours[0].startswith(f"interactavatar {command}: error: {uri}: "), ours[0]
    return ours[0]


def test_a_missing_registry_alias_or_version_is_one_line_naming_it(environment):
    line = assert_one_line_error(run_cli(environment, "registry", "resolve", "models:/nope@champion"),
                                 "registry resolve", "models:/nope@champion")
    assert "no version of 'nope' under alias 'champion'" in line
    line = assert_one_line_error(run_cli(environment, "registry", "resolve", "models:/interactavatar/99"),
                                 "registry resolve", "models:/interactavatar/99")
    assert "(name=interactavatar, version=99) not found" in line


def test_a_registry_server_that_does_not_answer_is_one_line_naming_it(environment, closed_port):
    # MLflow's client alone retries a refused connection for about four minutes.
    server = f"http://127.0.0.1:{closed_port}"
    done = run_cli(environment | {"MLFLOW_TRACKING_URI": server}, "registry", "resolve", "models:/interactavatar@champion")
    line = assert_one_line_error(done, "registry resolve", "models:/interactavatar@champion")
    assert f"the registry at {server} does not answer (ConnectionError" in line


def test_an_s3_server_that_does_not_answer_is_one_line_naming_the_uri(environment, closed_port):
    done = run_cli(environment, "trainjob", "node", "--input", "data=s3://dvc/data", "--", "true")
    line = assert_one_line_error(done, "trainjob node", "s3://dvc/data")
    assert f"127.0.0.1:{closed_port} does not answer" in line


def test_the_library_names_the_reference_it_cannot_fetch(environment, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from interactavatar.io.model_refs import registry_version, resolve_model
    from interactavatar.io.storage import client, download_folder, upload_bytes

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    MlflowClient(environment["MLFLOW_TRACKING_URI"]).create_registered_model("interactavatar")

    with pytest.raises(UnavailableURI, match=r"^models:/interactavatar/99: cannot be fetched from the registry at "
                                             r"sqlite:.*version=99\) not found"):
        resolve_model("models:/interactavatar/99", tmp_path / "download")
    with pytest.raises(UnavailableURI, match=r"^models:/interactavatar@champion: the registry at sqlite:\S+ has no "
                                             r"version of 'interactavatar' under alias 'champion'"):
        registry_version("models:/interactavatar@champion")
    # KServe's storage (boto3), as `serve --model s3://...` and `train --init s3://...` use it.
    with pytest.raises(UnavailableURI, match=rf"^s3://models/m: cannot be downloaded from "
                                             rf"{environment['AWS_ENDPOINT_URL']}: Could not connect"):
        resolve_model("s3://models/m", tmp_path / "download-s3")
    # io/storage.py (minio), as the pipeline's steps and the TrainJob nodes use it.
    s3 = client()
    with pytest.raises(UnavailableURI, match=r"^s3://models/a/b: the S3 server at 127\.0\.0\.1:\d+ does not answer"):
        upload_bytes(s3, b"x", "s3://models/a/b")
    with pytest.raises(UnavailableURI, match=r"^s3://models/a: the S3 server"):
        download_folder(s3, "s3://models/a", tmp_path / "folder")
    assert not (tmp_path / "folder").exists()
