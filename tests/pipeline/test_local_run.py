"""The whole pipeline on this machine, for real: the KFP local runner, DVC pulling the data from
an S3 server on loopback, an MLflow server with artifacts on that S3, DeepSpeed on the CPU."""

import json
import os
import subprocess
import sys

import mlflow
import pytest
import yaml
from helpers.datasets import git, make_data_repo_on_s3

pytestmark = pytest.mark.integration

STEPS = ["--param", "preset=tiny", "--param", "vae_steps=2", "--param", "pim_steps=2", "--param", "audio_steps=2",
         "--param", "joint_steps=2", "--param", "batch_size=2", "--param", "vae_batch_size=2", "--param", "pim_batch_size=2", "--param", "eval_steps=2",
         "--param", "apply_deployment=false",
         # Two clips (the fewest an interval needs) of the train split (the tiny data's test split has
         # one).
         "--param", "eval_split=train", "--param", "eval_clips=2"]


def _set_policy(env, *flags):
    """The registry's gate policy, set the way an admin does (the pipeline cannot set it)."""
    subprocess.run([sys.executable, "-m", "interactavatar.cli", "registry", "policy", "set", *flags],
                   env=env, check=True, capture_output=True, timeout=300)


def _run_pipeline(repo, work, env, *params):
    result = subprocess.run(
        [sys.executable, "-m", "interactavatar.cli", "pipeline", "run", "--local", "--data-repo", str(repo),
         "--work", str(work), *STEPS, *params], env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.rindex("{"):])


def test_pipeline_runs_locally_from_versioned_data_to_a_deployable_champion(tmp_path, local_stack):
    env = {**os.environ, **local_stack, "DVC_NO_ANALYTICS": "1"}
    repo, revision = make_data_repo_on_s3(tmp_path, "s3://dvc/pipeline-test", env)  # the run fetches from S3
    # A gate that a model trained for two steps can pass: at most 1 worse in box IoU than the floor.
    _set_policy(env, "--gate", "grounding_iou:max:-1", "--allow-worse", "--reason", "smoke test: a two-step model")

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
    # the run's MLflow dataset input: the DVC repository, revision and path the task fetched
    (dataset_input,) = training.inputs.dataset_inputs
    assert json.loads(dataset_input.dataset.source) == {"repo": str(repo), "rev": revision, "path": "data/synth"}
    assert champion.tags["gate.baseline_version"] == "" and champion.tags["gate.passed"] == "true"  # vs the floor
    stages = {r.data.tags.get("stage") for r in client.search_runs(
        [training.info.experiment_id], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'")}
    assert {"vae", "pim", "audio", "joint", "evaluate"} <= stages

    manifests = list((tmp_path / "work" / "kfp").glob("*/deploy/manifest"))
    assert len(manifests) == 1
    isvc = yaml.safe_load(manifests[0].read_text())
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://mlflow/artifacts/")
    # The validation's GX project artifact: its stored result and GX's Data Docs.
    (project,) = (tmp_path / "work" / "kfp").glob("*/validate-data/gx_project")
    assert len(list((project / "gx" / "uncommitted" / "validations").rglob("*.json"))) == 1
    assert (project / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").is_file()

    # `demo retrain` on that output: a data engineer ingests three new takes and versions them
    # (v2); the scheduled run (data_rev HEAD, init_model=champion) fine-tunes the champion on them,
    # scored against it; a harmful run (learning rate 10) is refused and the champion kept. The
    # gate is the default one here (a tiny model trained for two steps cannot show a gain).
    _set_policy(env, "--reason", "back to the default")
    result = subprocess.run(
        [sys.executable, "-m", "interactavatar.cli", "demo", "retrain", "--out", str(tmp_path), "--new-clips", "3",
         "--seed", "5", "--harmful-learning-rate", "10", *STEPS],
        env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo retrain: 4 stages in" in result.stderr  # no terminal: one summary line, no bar
    printed = "\n" + result.stdout
    summary = json.loads(printed[printed.rindex("\n{\n") + 1:])  # the last top-level object
    head = git(repo, "rev-parse", "HEAD")
    assert summary["data_rev_v2"] == head != revision and "ingested" in git(repo, "log", "-1", "--format=%s")
    assert summary["v1"]["version"] == str(champion.version) and "scratch" not in summary
    retrained = summary["retrained"]
    # Warm-started from the champion, on v2, and scored against the champion in one evaluation.
    assert retrained["data_rev"] == head and retrained["baseline_version"] == str(champion.version)
    version = client.get_model_version("interactavatar", retrained["version"])
    assert version.tags["lineage.parent"] == f"models:/interactavatar/{champion.version}"
    stages = {r.data.tags.get("stage") for r in client.search_runs(
        [training.info.experiment_id], f"tags.mlflow.parentRunId = '{version.tags['pipeline_run_id']}'")}
    assert stages & {"vae", "pim", "audio"} == set() and {"joint", "evaluate"} <= stages
    harmful = summary["harmful"]
    assert not harmful["promoted"] and harmful["reason"] and summary["champion"]["kept_after_harmful_run"]
    assert summary["champion"]["version"] == str(client.get_model_version_by_alias("interactavatar", "champion").version)
    assert not list((tmp_path / "retrain" / "harmful" / "kfp").glob("*/deploy*"))  # never deployed
    for name in ("retrain_v1.mp4", "retrain_champion.mp4"):
        assert (tmp_path / name).stat().st_size > 0
    # Lineage: the retrained version back to v1, with both data revisions.
    assert [(e["version"], e["origin"], e["data_rev"]) for e in summary["lineage"]] == [
        (retrained["version"], "model", head), (str(champion.version), "scratch", revision)]
