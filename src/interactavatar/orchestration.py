"""What the pipeline's steps do that no other module does: fetch a DVC-versioned dataset at a
revision, train a stage here or on several nodes, and put the champion behind an InferenceService.
The KFP components call these."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def fetch_dataset(repo: str, rev: str, path: str, destination: str | Path) -> str:
    """Materialise the dataset `path` of git+DVC repository `repo` at `rev` into `destination`.

    Returns the resolved git revision (the lineage tag every later step carries). The files come
    from the DVC cache or remote (S3 settings from the environment), as `dvc get` would fetch them.
    """
    from dvc.api import DVCFileSystem

    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    try:
        fs = DVCFileSystem(repo, rev=rev or None)
        if not fs.exists(path):
            raise FileNotFoundError(f"{repo}@{rev or 'HEAD'}: no dataset at {path!r}")
        fs.get(path, str(destination), recursive=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # DVC raises many kinds: name the repository, revision and path
        raise ValueError(f"{repo}@{rev or 'HEAD'}:{path}: could not fetch the dataset ({err})") from err
    return resolve_revision(repo, rev)


def resolve_revision(repo: str, rev: str) -> str:
    """The full commit id of `rev` (HEAD when empty) in a local repository; `rev` itself otherwise."""
    if not Path(repo).is_dir():
        return rev or "HEAD"
    result = subprocess.run(["git", "-C", repo, "rev-parse", rev or "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else rev or "HEAD"


def train_stage(spec, nodes, output_uri: str) -> Path:
    """Train the stage `spec` (a `train.stages.StageSpec`) in this process when `nodes` (a
    `trainjob.TrainJobSettings`) asks for one node, else as a Kubeflow Trainer TrainJob on
    `nodes.num_nodes` nodes. `output_uri` is the calling task's output artifact URI (it names
    the job). Either way the model directory ends up in `spec.out`."""
    if nodes.num_nodes == 1:
        from interactavatar.train.stages import run_stage

        return run_stage(spec)
    from interactavatar.trainjob import run_stage_as_train_job

    return run_stage_as_train_job(spec, nodes, output_uri)


def deploy(storage_uri: str, name: str, namespace: str, manifest_path: str | Path, apply: bool,
           gpu: int = 1) -> str:
    """Write the InferenceService for `storage_uri`; with `apply`, create it in the cluster or patch
    it in place (a rollout, not a delete-and-create: the old predictor serves until the new is
    ready). Returns "created", "patched", "written", or "not deployable" for a model that is not
    on S3 (a run on a bare MLflow store, with no cluster to deploy to anyway)."""
    from interactavatar.serve.isvc import build_inference_service, render_manifest

    if not storage_uri.startswith("s3://") and not apply:
        Path(manifest_path).write_text(f"# not deployable: {storage_uri} is not an s3:// URI\n")
        return "not deployable"

    isvc = build_inference_service(name=name, namespace=namespace, storage_uri=storage_uri, gpu=gpu)
    Path(manifest_path).write_text(render_manifest(isvc))
    if not apply:
        return "written"
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = custom_objects_api()
    body = client.ApiClient().sanitize_for_serialization(isvc)
    group, version = "serving.kserve.io", "v1beta1"
    try:
        api.create_namespaced_custom_object(group, version, namespace, "inferenceservices", body)
        return "created"
    except ApiException as err:
        if err.status != 409:
            raise
    api.patch_namespaced_custom_object(group, version, namespace, "inferenceservices", name, body)
    return "patched"


def custom_objects_api():
    """The Kubernetes API for custom resources: the pod's ServiceAccount inside the cluster,
    KUBECONFIG (or ~/.kube/config) outside it."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # Read KUBECONFIG now: the client captured its value when it was first imported.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.CustomObjectsApi()
