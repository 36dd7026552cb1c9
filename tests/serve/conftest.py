"""Request media, and real model servers on 127.0.0.1 (subprocesses); the model is tests/conftest.py's."""

import numpy as np
import pytest
from helpers.media import png_bytes, wav_bytes
from helpers.model_server import RunningServer

from interactavatar.config import preset
from interactavatar.io.media import write_video

TOKEN = "test-token-3f9a"


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


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """start_server(model_ref, *serve_args, env=None, token=None) -> a ready RunningServer, stopped
    after the session."""
    servers = []

    def start(model_ref, *args, env=None, token=None):
        server = RunningServer(model_ref, tmp_path_factory.mktemp("server") / "server.log", *args, env=env,
                               token=token)
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


@pytest.fixture(scope="session")
def guarded_server(start_server, model_dir, tmp_path_factory):
    """A bearer token (a file, as a mounted Secret gives it), one request per client at a time and
    bodies due within 2 s; room for three requests in the server, so that the per-client limit is
    what refuses the second."""
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN + "\n")
    return start_server(model_dir, "--auth-token-file", str(token_file), "--max-per-client", "1",
                        "--body-timeout-s", "2", "--max-concurrency", "1", "--max-queue", "2", token=TOKEN)
