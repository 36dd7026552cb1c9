"""`interactavatar serve` as a subprocess on a free loopback port, for the serving tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from interactavatar.train.engine import free_port


class RunningServer:
    """`interactavatar serve --model MODEL_REF ARGS...` on 127.0.0.1, its output in `log_path`."""

    def __init__(self, model_ref, log_path: Path, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "interactavatar.cli", "serve", "--model", str(model_ref), "--port", str(self.port),
             *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": "2"},
        )

    def wait_ready(self, timeout_s=90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server not ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
