"""`interactavatar serve` on a port already in use says so in one line naming host:port, before it
loads the model: the model given here does not exist, so the port is checked first if that is the
error reported."""

import os
import socket
import subprocess
import sys

from interactavatar.train.engine import free_port


def test_a_port_in_use_is_reported_before_the_model_is_loaded(tmp_path):
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as occupant:
        assert occupant.getsockname()[1] == port
        result = subprocess.run(
            [sys.executable, "-m", "interactavatar.cli", "serve", "--model", str(tmp_path / "no-such-model"),
             "--port", str(port)],
            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"interactavatar serve: error: 127.0.0.1:{port} is already in use; stop what listens there or "
        "choose another --port"]


def test_a_model_that_cannot_be_had_ends_the_server_in_one_line(tmp_path):
    """The model loads beside the listening server: its failure stops the server gracefully, with
    the reference's one-line error last and no traceback (uvicorn printed a CancelledError one)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "interactavatar.cli", "serve", "--model", "models:/nope@champion",
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].startswith("interactavatar serve: error: models:/nope@champion: ")
