"""The tiny pipeline with every task in the project's image: KFP's own local DockerRunner, speaking
to podman's Docker-compatible socket; DVC pulling the data from an S3 server on loopback, an MLflow
server with artifacts on that S3 (the local stack, reached over the host's network). Each task runs
as the image's user, as in the cluster. Nothing is mocked."""

import json
import os
import subprocess
import sys

import mlflow
import pytest
import yaml
from helpers.datasets import make_data_repo_on_s3

from interactavatar.cluster.names import IMAGE_UID

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.container]

MODEL_NAME = "interactavatar-in-containers"  # its own registered model: the session's stack is shared
PARAMS = {"preset": "tiny", "vae_steps": 2, "pim_steps": 2, "audio_steps": 2, "joint_steps": 2, "batch_size": 2,
          "vae_batch_size": 2, "pim_batch_size": 2, "eval_steps": 2, "eval_split": "train", "eval_clips": 2,
          "apply_deployment": "false", "model_name": MODEL_NAME}


def cli(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "interactavatar.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_pipeline_runs_with_every_task_in_the_image(docker_host, local_stack, tmp_path):
    env = {**os.environ, **local_stack, "DOCKER_HOST": docker_host, "DVC_NO_ANALYTICS": "1"}
    repo, revision = make_data_repo_on_s3(tmp_path, "s3://dvc/containers-test", env)  # tasks fetch from S3
    # A gate a two-step model can pass, set as an admin does (see test_local_run.py).
    policy = cli("registry", "policy", "set", "--name", MODEL_NAME, "--gate", "grounding_iou:max:-1", "--allow-worse",
                 "--reason", "container smoke test: a two-step model", env=env)
    assert policy.returncode == 0, policy.stderr[-2000:]

    params = [arg for key, value in PARAMS.items() for arg in ("--param", f"{key}={value}")]
    run = cli("pipeline", "run", "--local", "--runner", "docker", "--data-repo", str(repo), "--data-rev", revision,
              "--work", str(tmp_path / "work"), *params, env=env, timeout=1500)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    summary = json.loads(run.stdout[run.stdout.rindex("{"):])

    # Every task ran in the image, as its user: the subprocess runner would have written these as root.
    task_outputs = list((tmp_path / "work" / "kfp").glob("interactavatar-training-*/*/executor_output.json"))
    tasks = {path.parent.name for path in task_outputs}
    assert {"validate-data", "vae-pretrain", "pim-pretrain", "audio-pretrain", "joint-finetune", "evaluate",
            "register", "deploy"} <= tasks
    assert {path.stat().st_uid for path in task_outputs} == {IMAGE_UID}

    server = local_stack["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(tracking_uri=server, registry_uri=server)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.tags["data_rev"] == revision
    assert champion.tags["pipeline_run_id"] == summary["parent_run_id"]
    manifests = list((tmp_path / "work" / "kfp").glob("*/deploy/manifest"))
    assert len(manifests) == 1
    isvc = yaml.safe_load(manifests[0].read_text())
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://mlflow/")
    # The validation's GX project artifact: its stored result and GX's Data Docs.
    (project,) = (tmp_path / "work" / "kfp").glob("*/validate-data/gx_project")
    assert len(list((project / "gx" / "uncommitted" / "validations").rglob("*.json"))) == 1
    assert (project / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()
