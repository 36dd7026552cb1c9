"""`pipeline run --local --runner docker`: every task in the project's image, through KFP's own
DockerRunner, on Docker or on podman's Docker-compatible socket (DOCKER_HOST=unix:///.../podman.sock).

What a task in a container cannot take from this machine, it is handed here, as a cluster's pod
would be given it:
- the settings the cluster gives every task (the S3 Secret's and endpoints ConfigMap's variables,
  cluster/names.py) from this environment; MLflow must then be a server, since a SQLite file on
  this machine is not in the container;
- the host's network (network_mode host), so that loopback servers (the local stack) are reachable;
- the data repository: a local one is cloned into the pipeline root, which DockerRunner mounts at
  the same path (its DVC remote must be reachable from the task: S3, not a folder of this machine;
  its branches come as the clone's remote branches, its HEAD as the clone's);
- the pipeline root, owned by the image's user when this runs as root: tasks run as that user
  (IMAGE_UID), as in the cluster, and write their outputs there.
The image is the one the components name (cluster/names.IMAGE), as built by `make image`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from interactavatar.cluster.names import ENDPOINT_KEYS, IMAGE_UID, S3_SECRET_KEYS

RUNNERS = ("subprocess", "docker")


def docker_runner():
    """KFP's DockerRunner with the host's network and the cluster's task settings from this
    environment; refuses a tracking URI that a container cannot reach."""
    import kfp.local

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking_uri.startswith(("http://", "https://")):
        raise ValueError(f"--runner docker: MLFLOW_TRACKING_URI={tracking_uri!r}: tasks in containers need an "
                         "MLflow server (e.g. infra/local-stack.sh), not a store on this machine")
    environment = {key: os.environ[key] for key in (*ENDPOINT_KEYS, *S3_SECRET_KEYS) if key in os.environ}
    # entrypoint [""] clears the image's ENTRYPOINT (`interactavatar`): the task's command then runs
    # as given, as a pod's `command` replaces it in the cluster (docker-py's `command` is only CMD).
    return kfp.local.DockerRunner(network_mode="host", environment=environment, entrypoint=[""])


def prepare_pipeline_root(pipeline_root: Path) -> None:
    """The pipeline root, writable by the image's user: handed to it when this runs as root; a
    non-root caller must own a root that uid IMAGE_UID can write (e.g. by group)."""
    pipeline_root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for folder, _, files in os.walk(pipeline_root):
            os.chown(folder, IMAGE_UID, IMAGE_UID)
            for name in files:
                os.chown(os.path.join(folder, name), IMAGE_UID, IMAGE_UID)


def data_repo_for_containers(data_repo: str, pipeline_root: Path) -> str:
    """`data_repo` as the tasks' containers can reach it: a URL as it is; a local repository as a
    fresh clone inside the pipeline root (made again on every run, so that it holds the newest
    commits; it is small, DVC's data stays on the remote)."""
    if not Path(data_repo).is_dir():
        return data_repo
    clone = pipeline_root / "data-repo"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "--quiet", str(Path(data_repo).resolve()), str(clone)],
                   check=True, capture_output=True, text=True)
    return str(clone)
