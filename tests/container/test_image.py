"""The project image, run for real: its CLI, one pipeline step and the model server, each as the
image's unprivileged user on a read-only root filesystem, as the cluster's pods run it
(k8s/serving/servingruntime.yaml, the Trainer runtime)."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from conftest import podman
from helpers.datasets import TINY, make_dataset
from helpers.media import png_bytes, wav_bytes

from interactavatar.cluster.names import IMAGE_UID
from interactavatar.inference.client import EndpointClient
from interactavatar.io.media import probe_video
from interactavatar.train.engine import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.container]

# What every pod of ours gets: no writes outside its volumes, /tmp and the home an emptyDir each.
POD_LIKE = ["--rm", "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/home/interactavatar"]


def readable_copy(source, destination):
    """`source` copied to `destination`, readable by the image's user (pytest's folders are 0700)."""
    shutil.copytree(source, destination)
    for path in [destination, *destination.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    destination.parent.chmod(0o755)
    return destination


def test_the_image_runs_the_cli_as_its_unprivileged_user(image):
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == str(IMAGE_UID) and config["Entrypoint"] == ["interactavatar"]

    help_text = podman("run", *POD_LIKE, image, "--help").stdout
    for command in ("data", "train", "evaluate", "registry", "serve", "pipeline"):
        assert command in help_text

    probe = podman("run", *POD_LIKE, "--entrypoint", "sh", image, "-c",
                   "id -u; for tool in gcc pytest ruff pip3; do command -v $tool || echo no-$tool; done").stdout.split()
    assert probe[0] == str(IMAGE_UID)
    # Only what serving and training need: no compiler or test tools (pip comes with the venv).
    assert {"no-gcc", "no-pytest", "no-ruff"} <= set(probe)


def test_a_pipeline_step_runs_inside_the_image(image, tmp_path):
    """`data validate`, the validate_data component's work, on a dataset mounted read-only."""
    data = readable_copy(make_dataset(tmp_path / "made", num_clips=3, seed=2, spec=TINY), tmp_path / "shared" / "data")
    reports = tmp_path / "shared" / "reports"
    reports.mkdir(mode=0o777)
    reports.chmod(0o777)
    result = podman("run", *POD_LIKE, "-v", f"{data}:/data:ro", "-v", f"{reports}:/reports", image,
                    "data", "validate", "/data", "--report", "/reports/validation.html", check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (reports / "validation.html").stat().st_size > 0
    assert (reports / "validation.html").stat().st_uid == IMAGE_UID  # written by the image's user

    (data / "manifest.jsonl").write_text('{"clip_id": "x", "path": "../../etc", "split": "train"}\n')
    refused = podman("run", *POD_LIKE, "-v", f"{data}:/data:ro", image, "data", "validate", "/data", check=False)
    assert refused.returncode != 0 and "manifest.jsonl" in refused.stdout + refused.stderr


def test_the_image_serves_the_tiny_model_as_non_root(image, model_dir, tmp_path):
    model = readable_copy(model_dir, tmp_path / "shared" / "model")
    port = free_port()
    container = podman("run", "--detach", *POD_LIKE, "--network", "host", "-v", f"{model}:/mnt/models:ro", image,
                       "serve", "--model", "/mnt/models", "--host", "127.0.0.1", "--port", str(port)).stdout.strip()
    try:
        client = EndpointClient(f"http://127.0.0.1:{port}", timeout_s=300)
        client.wait_ready(timeout_s=180)
        # Every process of the container: the image's user inside, uid IMAGE_UID on the host.
        users = podman("top", container, "user", "huser", "args").stdout.splitlines()[1:]
        assert users and all(line.split()[:2] == ["interactavatar", str(IMAGE_UID)] for line in users), users

        started = time.monotonic()
        result = client.generate(png_bytes(), wav_bytes(), "The man lifts the red cup", {"steps": 2, "seed": 1})
        (tmp_path / "served.mp4").write_bytes(result.videos["video"])
        video = probe_video(tmp_path / "served.mp4")
        assert video.num_frames > 0, f"no frames after {time.monotonic() - started:.0f} s"
    finally:
        logs = podman("logs", container, check=False)
        podman("rm", "--force", container, check=False)
    assert "Traceback" not in logs.stdout + logs.stderr, logs.stderr[-3000:]
