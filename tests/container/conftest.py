"""The project image, built for real with podman (docker/build-image.sh), for the tests that run it.

Building needs root (podman's storage, debootstrap) and Debian's and PyPI's package servers. Where
they are missing the tests skip with the reason, except where INTERACTAVATAR_REQUIRE_CONTAINERS=1
(.ci/run sets it): there a missing engine fails, so CI never passes without running them."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/interactavatar:test"


def _unavailable(reason: str):
    if os.environ.get("INTERACTAVATAR_REQUIRE_CONTAINERS") == "1":
        pytest.fail(f"INTERACTAVATAR_REQUIRE_CONTAINERS=1 but {reason}")
    pytest.skip(reason)


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """`podman ARGS` (runc, as docker/podman-host.sh configured it), its output as text."""
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def image() -> str:
    """The image of the working tree, tagged IMAGE; layers unchanged since the last build are reused."""
    if os.geteuid() != 0:
        _unavailable("building images here needs root (podman storage, debootstrap)")
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        _unavailable("no podman, and no apt-get to install it")
    build = subprocess.run([str(REPO / "docker" / "build-image.sh"), IMAGE], capture_output=True, text=True,
                           timeout=1800)
    assert build.returncode == 0, f"docker/build-image.sh failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    return IMAGE


@pytest.fixture(scope="session")
def docker_host(image, tmp_path_factory):
    """podman's Docker-compatible API on a socket of this session (`podman system service`), as
    DOCKER_HOST: what KFP's DockerRunner speaks through the docker SDK."""
    socket_path = tmp_path_factory.mktemp("podman") / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not socket_path.exists():
        if service.poll() is not None or time.monotonic() > deadline:
            service.kill()
            raise AssertionError(f"podman system service did not start: {service.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    yield f"unix://{socket_path}"
    service.terminate()
    service.wait(timeout=30)
