"""Multi-node training: the training components launch a Kubeflow Trainer TrainJob and wait for it.

The Kubernetes API server and the Trainer controller cannot run here; `trainer_api_stub` stands in
for both on 127.0.0.1 (only they are stubbed). Everything else is real: the component's python
function, the kubernetes client, an S3 server (SeaweedFS) for the staged inputs, the mirrored
checkpoints and the published model, and, in the first two tests, two TrainJob nodes run as local
processes (torchrun, DeepSpeed on gloo) with the job's own command and environment, each on a
folder of its own (its disk).
"""

import argparse
import json
import re

import mlflow
import pytest
import torch
from helpers.datasets import make_dataset
from helpers.trainer_api_stub import (
    TrainerAPIStub,
    complete_without_running,
    fail_with,
    never_finish,
    node_folder,
    preempt_when,
    run_nodes,
)
from kfp import dsl
from safetensors.torch import load_file

from interactavatar.cluster.names import IMAGE
from interactavatar.cluster.trainjob import (
    TrainJobSettings,
    job_name,
    run_stage_as_train_job,
    train_arguments,
)
from interactavatar.io.storage import client, ensure_bucket
from interactavatar.model.vae import CausalVAE
from interactavatar.pipeline.components import vae_pretrain
from interactavatar.train.commands import add_commands as add_train_commands
from interactavatar.train.curriculum import Curriculum
from interactavatar.train.engine import EngineConfig
from interactavatar.train.stages import StageSpec

BUCKET = "trainjobs-test"


def artifact(kind, path, uri=None):
    """An artifact at the local `path`; `uri` is where KFP keeps it (the job's name derives from it)."""
    made = kind(uri=uri or str(path))
    made.custom_path = str(path)
    return made


@pytest.fixture(scope="module")
def trainjob_dataset(tmp_path_factory):
    """Four clips at the tiny preset's size (64x64, 5 frames), seed 7. Read-only."""
    return make_dataset(tmp_path_factory.mktemp("trainjob-data") / "dataset", num_clips=4, seed=7)


@pytest.fixture
def cluster(tmp_path, monkeypatch, s3_server):
    """The launcher's environment (S3 keys and endpoint, a kubeconfig) and the cluster's Secret and
    ConfigMap contents that the stub resolves a node's env from."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    ensure_bucket(client(), BUCKET)
    secrets = {"interactavatar-s3": {"AWS_ACCESS_KEY_ID": s3_server.access_key,
                                     "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}}
    config_maps = {"interactavatar-endpoints": {
        "AWS_ENDPOINT_URL": s3_server.endpoint, "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint, "S3_USE_HTTPS": "0",
        "AWS_DEFAULT_REGION": s3_server.region, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MLFLOW_DISABLE_TELEMETRY": "true"}}

    def start(on_create) -> TrainerAPIStub:
        stub = TrainerAPIStub(tmp_path / "nodes", secrets, config_maps, on_create)
        monkeypatch.setenv("KUBECONFIG", str(stub.write_kubeconfig(tmp_path / "kubeconfig")))
        return stub

    return start


def train_vae_on_two_nodes(dataset, out, output_uri):
    return vae_pretrain.python_func(
        dataset=artifact(dsl.Dataset, dataset), preset="tiny", steps=2, batch_size=2, learning_rate=2e-3, seed=0,
        vae_weights_uri="", video_crop=0, parent_run_id="", vae=artifact(dsl.Model, out, output_uri), num_nodes=2,
        gpus_per_node=2, trainer_runtime="torch-distributed", trainer_namespace="kubeflow", trainer_image=IMAGE,
        trainjob_staging_uri=f"s3://{BUCKET}/staging", task_gpus=0, data_rev="")


def objects_under(prefix):
    return sorted(o.object_name for o in client().list_objects(BUCKET, prefix=prefix, recursive=True))


@pytest.mark.integration
@pytest.mark.slow
def test_vae_stage_trains_as_a_two_node_train_job(cluster, trainjob_dataset, tmp_path, s3_server):
    output_uri = "minio://mlpipeline/v2/artifacts/run-1/vae-pretrain/vae"
    name = job_name("vae", output_uri)
    with cluster(run_nodes) as stub:
        train_vae_on_two_nodes(trainjob_dataset, tmp_path / "vae", output_uri)

    (job,) = stub.created()
    collection = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/kubeflow/trainjobs"
    assert stub.methods()[:2] == [f"GET {collection}/{name}", f"POST {collection}"]
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob",
                                                                         name)
    assert job["spec"]["runtimeRef"] == {"name": "torch-distributed"}
    trainer = job["spec"]["trainer"]
    assert trainer["image"] == IMAGE and trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 2
    assert trainer["resourcesPerNode"] == {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}
    staging = f"s3://{BUCKET}/staging/{name}"
    separator = trainer["command"].index("--")
    assert trainer["command"][:separator] == ["interactavatar", "trainjob", "node", "--input",
                                              f"data={staging}/inputs/data", "--output", f"out={staging}/output",
                                              "--checkpoints", f"out/checkpoints={staging}/checkpoints"]
    launched = trainer["command"][separator + 1:]
    assert launched[:5] == ["torchrun", "-m", "interactavatar.cli", "train", "vae"]
    parser = argparse.ArgumentParser()
    add_train_commands(parser.add_subparsers(dest="command"))
    train = parser.parse_args(launched[3:])
    assert (train.preset, train.steps, train.batch_size, train.lr, str(train.data), str(train.out)) == (
        "tiny", 2, 2, 2e-3, "data", "out")
    env = {var["name"]: var["valueFrom"] for var in trainer["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "interactavatar-s3", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env["MLFLOW_TRACKING_URI"] == {"configMapKeyRef": {"name": "interactavatar-endpoints",
                                                              "key": "MLFLOW_TRACKING_URI"}}
    assert s3_server.secret_key not in json.dumps(job), "keys come from the Secret, never inline"

    # Node 0's model directory, without the node-local checkpoints, is the output artifact.
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == ["config.yaml", "mlflow_run_id", "model.safetensors",
                                                                "training_curve.tsv"]
    assert CausalVAE.from_pretrained(tmp_path / "vae").cfg.latent_std > 0
    # Both ranks trained: ZeRO shards the optimizer between them.
    assert (node_folder(stub, name, 1, 1) / "out" / "checkpoints" / "step-00000002" /
            "zero_pp_rank_1_mp_rank_00_optim_states.pt").is_file()
    # The inputs' copies and the mirrored checkpoints go once the model is out.
    assert objects_under(f"staging/{name}/inputs/") == objects_under(f"staging/{name}/checkpoints/") == []
    assert f"staging/{name}/output/model.safetensors" in objects_under(f"staging/{name}/")


@pytest.mark.integration
@pytest.mark.slow
def test_train_job_killed_after_a_checkpoint_reached_s3_resumes_to_bit_identical_weights(
        cluster, trainjob_dataset, tmp_path):
    """Both nodes are SIGKILLed once the job's first checkpoint is published on S3; the retried
    task's new job starts on fresh disks, resumes from S3 and ends with the weights of a job that
    was never interrupted."""
    steps = 6
    nodes = TrainJobSettings(num_nodes=2, gpus_per_node=0, image=IMAGE, staging_uri=f"s3://{BUCKET}/staging")

    def vae_stage(out):
        return StageSpec(stage="vae", preset="tiny", data=trainjob_dataset, out=out, steps=steps, checkpoint_every=2,
                         engine=EngineConfig(micro_batch_size=2, learning_rate=2e-3))

    uninterrupted_uri = "minio://mlpipeline/v2/artifacts/run-5/vae-pretrain/vae"
    with cluster(run_nodes) as stub:
        run_stage_as_train_job(vae_stage(tmp_path / "uninterrupted"), nodes, uninterrupted_uri)
    # Every node, not only the one holding rank 0, points at its newest tag and keeps two.
    node_1_checkpoints = node_folder(stub, job_name("vae", uninterrupted_uri), 1, 1) / "out" / "checkpoints"
    assert sorted(p.name for p in node_1_checkpoints.iterdir()) == ["LATEST", "step-00000004", "step-00000006"]
    assert (node_1_checkpoints / "LATEST").read_text() == "step-00000006"

    output_uri = "minio://mlpipeline/v2/artifacts/run-6/vae-pretrain/vae"
    name = job_name("vae", output_uri)
    published = f"staging/{name}/checkpoints/LATEST.json"
    with cluster(preempt_when(lambda: objects_under(published) == [published])) as stub:
        # -9 from both: they were still training when they were killed.
        with pytest.raises(RuntimeError, match=re.escape(f"TrainJob kubeflow/{name} failed: NodesFailed: "
                                                         "exit codes [-9, -9]")):
            run_stage_as_train_job(vae_stage(tmp_path / "resumed"), nodes, output_uri)
        # KFP retries the task, which replaces the failed job with a new one.
        stub.on_create = run_nodes
        run_stage_as_train_job(vae_stage(tmp_path / "resumed"), nodes, output_uri)

    logs = [node_folder(stub, name, 2, rank).with_suffix(".log").read_text() for rank in (0, 1)]
    (tag,) = {re.search(r"trainjob node: resuming from (step-\d+)", log)[1] for log in logs}
    resumed_at = int(tag.removeprefix("step-"))
    assert 0 < resumed_at < steps
    # The second job went on with the killed attempt's MLflow run (named in the checkpoint): one
    # run, whose setup ended at step 0, then again at the resumed step, and which finished.
    tracking = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run_id = (tmp_path / "resumed" / "mlflow_run_id").read_text()
    assert [m.step for m in tracking.get_metric_history(run_id, "setup_s")] == [0, resumed_at]
    assert tracking.get_run(run_id).info.status == "FINISHED"

    resumed, uninterrupted = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("resumed",
                                                                                               "uninterrupted"))
    assert resumed.keys() == uninterrupted.keys()
    assert [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])] == []
    assert CausalVAE.from_pretrained(tmp_path / "resumed").cfg == CausalVAE.from_pretrained(
        tmp_path / "uninterrupted").cfg


def test_failed_train_job_names_the_job_and_the_trainers_message_and_a_retry_replaces_it(
        cluster, trainjob_dataset, tmp_path):
    output_uri = "minio://mlpipeline/v2/artifacts/run-2/vae-pretrain/vae"
    name = job_name("vae", output_uri)
    message = "trainer node-1 exited with code 137 (OOMKilled)"
    with cluster(fail_with("FailedJobs", message)) as stub:
        with pytest.raises(RuntimeError, match=re.escape(f"TrainJob kubeflow/{name} failed: FailedJobs: {message}")):
            train_vae_on_two_nodes(trainjob_dataset, tmp_path / "vae", output_uri)
        # KFP retries the task: the failed job is deleted, then launched anew under the same name.
        with pytest.raises(RuntimeError, match=re.escape(message)):
            train_vae_on_two_nodes(trainjob_dataset, tmp_path / "vae", output_uri)
    methods = [m.split()[0] for m in stub.methods()]
    posts = [i for i, method in enumerate(methods) if method == "POST"]
    deletes = [i for i, method in enumerate(methods) if method == "DELETE"]
    assert len(posts) == 2 and len(deletes) == 1 and posts[0] < deletes[0] < posts[1]


def test_train_job_that_never_finishes_times_out_and_is_deleted(cluster, trainjob_dataset, tmp_path):
    spec = StageSpec(stage="vae", preset="tiny", data=trainjob_dataset, out=tmp_path / "vae", steps=2)
    nodes = TrainJobSettings(num_nodes=2, image=IMAGE, staging_uri=f"s3://{BUCKET}/staging", timeout_s=2)
    with cluster(never_finish) as stub:
        with pytest.raises(TimeoutError, match=r"TrainJob kubeflow/interactavatar-vae-\w+: neither Complete nor "
                                               r"Failed after 2 s; deleted it"):
            run_stage_as_train_job(spec, nodes, "minio://mlpipeline/run-3/vae")
    assert stub.jobs == {} and "DELETE" in [m.split()[0] for m in stub.methods()]


def test_train_job_that_completes_without_publishing_a_model_is_an_error(cluster, trainjob_dataset, tmp_path):
    spec = StageSpec(stage="vae", preset="tiny", data=trainjob_dataset, out=tmp_path / "vae", steps=2)
    nodes = TrainJobSettings(num_nodes=2, image=IMAGE, staging_uri=f"s3://{BUCKET}/staging")
    with cluster(complete_without_running):
        with pytest.raises(FileNotFoundError, match=r"TrainJob kubeflow/interactavatar-vae-\w+ completed but published "
                                                    r"no model directory under s3://trainjobs-test/staging/"):
            run_stage_as_train_job(spec, nodes, "minio://mlpipeline/run-4/vae")


def test_train_arguments_carry_every_setting_or_refuse_by_name(tmp_path):
    folders = {"data": "data", "out": "out", "vae": "vae"}
    spec = StageSpec(stage="pim", preset="tiny", data=tmp_path / "d", out=tmp_path / "o", vae=tmp_path / "v",
                     steps=7, seed=3, checkpoint_every=5, log_every=2, curriculum=Curriculum(0.0, 1.0, 2.5),
                     gradient_checkpointing=True, data_rev="abc123", parent_run_id="run-9",
                     engine=EngineConfig(micro_batch_size=3, gradient_accumulation_steps=2, learning_rate=3e-4,
                                         warmup_steps=4, zero_stage=1))
    args = train_arguments(spec, folders)
    assert args[:2] == ["train", "pim"] and "--gradient-checkpointing" in args
    assert args[args.index("--curriculum") + 1] == "0.0,1.0,2.5"
    with pytest.raises(ValueError, match=r"engine\.weight_decay, split cannot be passed"):
        train_arguments(StageSpec(stage="vae", preset="tiny", data=tmp_path, out=tmp_path, split="val",
                                  engine=EngineConfig(weight_decay=0.1)), {"data": "data", "out": "out"})


@pytest.mark.parametrize(("field", "settings"), [
    ("num_nodes", dict(num_nodes=0)),
    ("gpus_per_node", dict(gpus_per_node=-1)),
    ("image", dict(num_nodes=2, image="")),
    ("staging_uri", dict(num_nodes=2, image=IMAGE, staging_uri="/local/folder")),
])
def test_train_job_settings_name_the_field_at_fault(field, settings):
    with pytest.raises(ValueError, match=f"^{field}:"):
        TrainJobSettings(**settings)


def test_the_stub_refuses_a_malformed_train_job_as_an_api_server_does(cluster):
    """Every TrainJob the stub receives is held to the TrainJob schema (kubeflow-trainer-api's typed
    models): the launcher's own job passes; a mistyped value or a missing required field is refused
    with 422 Invalid, an unknown field with 400 under fieldValidation=Strict, each named."""
    from kubernetes.client.rest import ApiException

    from interactavatar.cluster.k8s import custom_objects_api
    from interactavatar.cluster.trainjob import GROUP, PLURAL, VERSION, build_train_job

    settings = TrainJobSettings(num_nodes=2, gpus_per_node=1, image=IMAGE, staging_uri=f"s3://{BUCKET}/staging")
    job = build_train_job("interactavatar-vae-0123456789", settings, ["train", "vae"], {"data": "s3://b/d"},
                          "s3://b/o", "s3://b/c")

    def create(body, **options):
        return custom_objects_api().create_namespaced_custom_object(GROUP, VERSION, "kubeflow", PLURAL, body, **options)

    with cluster(never_finish) as stub:
        mistyped = json.loads(json.dumps(job))
        mistyped["spec"]["trainer"]["numNodes"] = "two"
        without_runtime = json.loads(json.dumps(job))
        del without_runtime["spec"]["runtimeRef"]
        for malformed, field in ((mistyped, "numNodes"), (without_runtime, "runtimeRef")):
            with pytest.raises(ApiException) as refused:
                create(malformed)
            assert refused.value.status == 422 and field in json.loads(refused.value.body)["message"], field
        misspelt = json.loads(json.dumps(job))
        misspelt["spec"]["trainr"] = misspelt["spec"].pop("trainer")
        with pytest.raises(ApiException) as strict:
            create(misspelt, field_validation="Strict")
        assert strict.value.status == 400 and 'unknown field "TrainJob.spec.trainr"' in \
            json.loads(strict.value.body)["message"]
        assert stub.jobs == {}
        assert create(job, field_validation="Strict")["spec"] == job["spec"]
