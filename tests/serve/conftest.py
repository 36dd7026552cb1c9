"""A tiny-preset model, request media, and real model servers on 127.0.0.1 (subprocesses)."""

import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from serve_helpers import png_bytes, wav_bytes

from interactavatar.config import preset
from interactavatar.media import write_video
from interactavatar.model.directory import init_model_directory


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return init_model_directory("tiny", tmp_path_factory.mktemp("serve-model") / "tiny")


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Bytes of a reference image, a speech clip and a pose video, and their files."""
    folder = tmp_path_factory.mktemp("media")
    pose = np.zeros((9, *preset("tiny").motion_size, 3), dtype=np.uint8)
    pose[:, 8:20, 10:20] = 255
    write_video(folder / "pose.mp4", pose, 25)
    files = {"image": folder / "ref.png", "audio": folder / "speech.wav", "pose_video": folder / "pose.mp4"}
    files["image"].write_bytes(png_bytes())
    files["audio"].write_bytes(wav_bytes())
    return {name: path.read_bytes() for name, path in files.items()} | {"files": files, "folder": folder}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    def __init__(self, model_ref, log_path, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
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


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """start_server(model_ref, *serve_args) -> a ready RunningServer, stopped after the session."""
    servers = []

    def start(model_ref, *args):
        server = RunningServer(model_ref, tmp_path_factory.mktemp("server") / "server.log", *args)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server, model_dir):
    """Small limits, so that each of them can be hit cheaply: 2 MB bodies, 5 s of audio, one
    generation at a time with two more queued."""
    return start_server(model_dir, "--max-payload-mb", "2", "--max-audio-seconds", "5",
                        "--max-concurrency", "1", "--max-queue", "2")
