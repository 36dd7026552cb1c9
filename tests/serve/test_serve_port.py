"""`interactavatar serve` on a port already in use says so in one line naming host:port, before it
loads the model: the model given here does not exist, so the port is checked first if that is the
error reported."""

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
