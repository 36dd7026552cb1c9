"""`interactavatar serve` as a subprocess on a free loopback port, for the serving tests and the
fuzz benchmark: start it, read its Prometheus metrics, and speak raw HTTP to it where a client
library would not misbehave on purpose (a body that stalls, a client that walks away)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from interactavatar.train.engine import free_port

from .processes import stop


class RunningServer:
    """`interactavatar serve --model MODEL_REF ARGS...` on 127.0.0.1, its output in `log_path`;
    `env` adds to the environment, `token` is what the helpers send as the bearer token."""

    def __init__(self, model_ref, log_path: Path, *args, env: dict[str, str] | None = None, token: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.token = token
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "interactavatar.cli", "serve", "--model", str(model_ref), "--port", str(self.port),
             *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": "2"} | (env or {}),
        )

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header the server expects, or none."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

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

    def metrics(self) -> dict[str, float]:
        """The server's own metrics (interactavatar_*), by name with labels: e.g.
        `interactavatar_generations_total{outcome="cancelled"}`; counters not yet touched are 0."""
        response = httpx.get(f"{self.url}/metrics", headers=self.auth, timeout=10)
        response.raise_for_status()
        values = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name.startswith("interactavatar_") and not sample.name.endswith("_created"):
                    labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
                    values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
        return values

    def wait_for_metrics(self, condition, what: str, timeout_s: float = 120.0) -> dict[str, float]:
        """Polls the metrics until `condition(metrics)` holds. The deadline only stops a broken server
        from hanging the suite; nothing is asserted about how long it took."""
        deadline = time.monotonic() + timeout_s
        while True:
            metrics = self.metrics()
            if condition(metrics):
                return metrics
            if time.monotonic() > deadline:
                raise AssertionError(f"the server never reached: {what}; metrics {metrics}")
            time.sleep(0.05)

    def send_raw(self, path: str, body: bytes, headers: dict[str, str] | None = None,
                 send_bytes: int | None = None) -> socket.socket:
        """A POST of `body` on a new connection (only its first `send_bytes` bytes when given: a
        stalled body); returns the open socket, to read the answer from or to close (a client that
        walks away)."""
        head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Length: {len(body)}",
                *(f"{name}: {value}" for name, value in (self.auth | (headers or {})).items())]
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:send_bytes])
        return connection

    def stop(self) -> None:
        stop(self.process)
        self._log.close()


def read_response(connection: socket.socket) -> tuple[int, bytes, bool]:
    """(status, body, closed) of the one response on `connection`: whether the server closed the
    connection after it. Reads until the server closes it or the body's Content-Length is in."""
    data = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            closed = True
            break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is not None and len(body) >= length:
            closed = False
            break
    head, _, body = data.partition(b"\r\n\r\n")
    if not closed:
        connection.settimeout(5)
        try:
            closed = connection.recv(1) == b""
        except TimeoutError:
            closed = False
    return int(head.split(b" ")[1]), body, closed
