"""The whole pipeline on this machine, for real: the KFP local runner, DVC pulling the data from
an S3 server on loopback, an MLflow server with artifacts on that S3, DeepSpeed on the CPU."""

import json
import os
import shutil
import subprocess
import sys

import mlflow
import pytest
import yaml
from helpers.datasets import DVC, TINY, git, make_data_repo

from interactavatar.data.synth import synthesize
from interactavatar.data.versioning import DATA_PATH

pytestmark = pytest.mark.integration

STEPS = ["--param", "preset=tiny", "--param", "vae_steps=2", "--param", "pim_steps=2", "--param", "audio_steps=2",
         "--param", "joint_steps=2", "--param", "batch_size=2", "--param", "vae_batch_size=2", "--param", "pim_batch_size=2", "--param", "eval_clips=1", "--param", "eval_steps=2",
         "--param", "apply_deployment=false"]


def _run_pipeline(repo, work, env, *params):
    result = subprocess.run(
        [sys.executable, "-m", "interactavatar.cli", "pipeline", "run", "--local", "--data-repo", str(repo),
         "--work", str(work), *STEPS, *params], env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.rindex("{"):])


def test_pipeline_runs_locally_from_versioned_data_to_a_deployable_champion(tmp_path, local_stack):
    env = {**os.environ, **local_stack, "DVC_NO_ANALYTICS": "1"}
    repo = make_data_repo(tmp_path, num_clips=6)
    subprocess.run([DVC, "remote", "add", "-d", "minio", "s3://dvc/pipeline-test"], cwd=repo, check=True, env=env)
    git(repo, "commit", "-qam", "remote")
    subprocess.run([DVC, "push", "-q"], cwd=repo, check=True, env=env)
    shutil.rmtree(repo / ".dvc" / "cache")  # the run must fetch the data from S3
    revision = git(repo, "rev-parse", "HEAD")

    summary = _run_pipeline(repo, tmp_path / "work", env, "--data-rev", revision)

    server = local_stack["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(tracking_uri=server, registry_uri=server)
    champion = client.get_model_version_by_alias("interactavatar", "champion")
    # lineage: data revision -> training runs under this pipeline run -> model version
    assert champion.tags["data_rev"] == revision
    assert champion.tags["pipeline_run_id"] == summary["parent_run_id"]
    training = client.get_run(champion.tags["training_run_id"])
    assert training.data.tags["stage"] == "joint"
    assert training.data.tags["mlflow.parentRunId"] == summary["parent_run_id"]
    assert training.data.tags["dataset_hash"] == champion.tags["dataset_hash"]
    stages = {r.data.tags.get("stage") for r in client.search_runs(
        [training.info.experiment_id], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'")}
    assert {"vae", "pim", "audio", "joint", "evaluate"} <= stages

    manifests = list((tmp_path / "work" / "kfp").glob("*/deploy/manifest"))
    assert len(manifests) == 1
    isvc = yaml.safe_load(manifests[0].read_text())
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://mlflow/artifacts/")

    # A scheduled retraining: a data engineer versions two more clips, and the run (data_rev HEAD,
    # init_model=champion) fine-tunes the champion on them instead of training four stages anew.
    synthesize(repo / DATA_PATH, num_clips=8, seed=5, spec=TINY)  # the first 6 clips stay as they were
    subprocess.run([DVC, "add", "-q", DATA_PATH], cwd=repo, check=True, env=env)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two more clips")
    subprocess.run([DVC, "push", "-q"], cwd=repo, check=True, env=env)
    second = _run_pipeline(repo, tmp_path / "work2", env, "--param", "init_model=champion")
    (retrained,) = client.search_model_versions(f"name='interactavatar' and tags.pipeline_run_id = '{second['parent_run_id']}'")
    assert retrained.tags["data_rev"] == git(repo, "rev-parse", "HEAD") != revision  # HEAD, resolved
    assert retrained.tags["lineage.origin"] == "model"
    assert retrained.tags["lineage.parent"] == f"models:/interactavatar/{champion.version}"
    assert retrained.tags["lineage.parent_version"] == str(champion.version)
    stages = {r.data.tags.get("stage") for r in client.search_runs(
        [training.info.experiment_id], f"tags.mlflow.parentRunId = '{second['parent_run_id']}'")}
    assert stages & {"vae", "pim", "audio"} == set() and {"joint", "evaluate"} <= stages
    from interactavatar.registry.mlflow import lineage

    chain = lineage(retrained.version, tracking_uri=server)
    assert [(e["version"], e["origin"]) for e in chain] == [(str(retrained.version), "model"),
                                                             (str(champion.version), "scratch")]
