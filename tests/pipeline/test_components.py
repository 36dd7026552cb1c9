"""Components called as plain Python functions, and the compiled pipeline kept in sync."""

import json
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from helpers.json_stub import JSONStubHandler
from kfp import dsl

from interactavatar.cluster.names import IMAGE
from interactavatar.pipeline import components
from interactavatar.pipeline.commands import COMPILED, COMPONENTS_DIR, compile_components, compile_pipeline
from interactavatar.pipeline.components import deploy, validate_data

REPO = Path(__file__).resolve().parents[2]


def artifact(kind, path):
    made = kind(uri=str(path))
    made.path = str(path)
    return made


def test_committed_pipeline_yaml_is_up_to_date(tmp_path):
    fresh = compile_pipeline(tmp_path / "pipeline.yaml")
    assert list(yaml.safe_load_all(fresh.read_text())) == list(yaml.safe_load_all((REPO / COMPILED).read_text())), \
        "pipelines/interactavatar_pipeline.yaml is stale: run `interactavatar pipeline compile`"


def test_committed_component_yamls_are_up_to_date(tmp_path):
    """components/ holds one YAML per component, current, and nothing else but its README."""
    fresh = compile_components(tmp_path)
    assert sorted(p.name for p in fresh) == sorted(f"{name}.yaml" for name in components.__all__)
    committed = REPO / COMPONENTS_DIR
    assert sorted(p.name for p in committed.iterdir()) == sorted([*(p.name for p in fresh), "README.md"])
    for path in fresh:
        assert yaml.safe_load(path.read_text()) == yaml.safe_load((committed / path.name).read_text()), \
            f"components/{path.name} is stale: run `interactavatar pipeline compile`"


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task of the compiled pipeline, nested condition DAGs included, by name."""
    found, pending = {}, [spec["root"]["dag"]["tasks"]]
    while pending:
        for name, task in pending.pop().items():
            found[name] = task
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                pending.append(component["dag"]["tasks"])
    return found


TRAINING = ("vae-pretrain", "pim-pretrain", "audio-pretrain", "joint-finetune", "warm-start-finetune")


def test_pipeline_shape():
    spec, platform = yaml.safe_load_all((REPO / COMPILED).read_text())
    tasks = _tasks(spec)
    for name, task in tasks.items():
        if not name.startswith("condition"):
            assert task["taskInfo"]["name"] != name, f"{name}: no display name"
    dependencies = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert dependencies["pim-pretrain"] == dependencies["audio-pretrain"] == {"vae-pretrain"}
    assert {"pim-pretrain", "audio-pretrain"} <= dependencies["joint-finetune"]
    # Two branches on the pinned init model: from scratch (four stages) or a warm start (one).
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    scratch, warm = (branches[name]["triggerPolicy"]["condition"] for name in sorted(branches))
    assert scratch == "inputs.parameter_values['pipelinechannel--resolve-init-model-Output'] == ''"
    assert warm == f"!({scratch})"
    assert dependencies["register"] == {"evaluate", "joint-finetune"}
    assert dependencies["register-2"] == {"evaluate-2", "warm-start-finetune"}
    for name in ("register", "register-2", "deploy", "deploy-2"):
        assert tasks[name]["cachingOptions"] == {}, name  # caching off (enableCache absent = false)
    deploys = [t for t in tasks.values() if "register" in t.get("triggerPolicy", {}).get("condition", "")]
    assert len(deploys) == 2
    kubernetes = platform["platforms"]["kubernetes"]
    for name in ("joint-finetune", "warm-start-finetune"):
        executor = kubernetes["deploymentSpec"]["executors"][f"exec-{name}"]
        assert executor["secretAsEnv"][0]["secretName"] == "interactavatar-s3"
        assert executor["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert executor["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    executors = spec["deploymentSpec"]["executors"]
    # Training tasks take their GPU count from a run parameter (0 when they only launch a TrainJob).
    joint_accelerator = executors["exec-joint-finetune"]["container"]["resources"]["accelerator"]
    assert joint_accelerator["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--train_task_gpus']}}"
    assert executors["exec-evaluate"]["container"]["resources"]["accelerator"]["resourceCount"] == "1"
    for name in TRAINING:
        inputs = tasks[name]["inputs"]["parameters"]
        # The task's GPU count is also an argument: it runs one torchrun process per GPU, and KFP
        # passes a parameter into a condition's DAG only when a task there takes it as an argument
        # (a resource placeholder alone leaves it undefined: "input argument ... not found").
        assert inputs["task_gpus"] == {"componentInputParameter": "pipelinechannel--train_task_gpus"}, name
        assert inputs["num_nodes"] == {"componentInputParameter": "pipelinechannel--train_num_nodes"}, name
        assert inputs["gpus_per_node"] == {"componentInputParameter": "pipelinechannel--train_gpus_per_node"}, name
        assert inputs["trainer_image"]["runtimeValue"]["constant"] == IMAGE, name
        # A preempted training task is retried once (a multi-node one resumes from S3).
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == 1, name
    # PIM trains at its own batch size and learning rate.
    pim_inputs = tasks["pim-pretrain"]["inputs"]["parameters"]
    assert pim_inputs["batch_size"] == {"componentInputParameter": "pipelinechannel--pim_batch_size"}
    assert pim_inputs["learning_rate"] == {"componentInputParameter": "pipelinechannel--pim_learning_rate"}
    assert tasks["vae-pretrain"]["inputs"]["parameters"]["batch_size"] == {
        "componentInputParameter": "pipelinechannel--vae_batch_size"}
    assert tasks["warm-start-finetune"]["inputs"]["parameters"]["init_model"] == {
        "componentInputParameter": "pipelinechannel--resolve-init-model-Output"}
    assert "retryPolicy" not in tasks["register"]
    assert spec["root"]["inputDefinitions"]["parameters"]["train_num_nodes"]["defaultValue"] == 1
    assert spec["root"]["inputDefinitions"]["parameters"]["init_model"]["defaultValue"] == ""


def test_every_cached_step_is_keyed_on_the_resolved_data_commit():
    """A recurring run names its data by a moving revision (HEAD, a branch). validate_data resolves
    it and is never cached, and every training task takes the resolved commit as a parameter: KFP's
    cache key holds it, so two runs over different commits train twice, and a cache hit means the
    same data. The alias a warm start names moves too: its resolution is never cached either."""
    spec, _ = yaml.safe_load_all((REPO / COMPILED).read_text())
    tasks = _tasks(spec)
    assert tasks["validate-data"]["cachingOptions"] == {} and tasks["resolve-init-model"]["cachingOptions"] == {}
    commit = {"componentInputParameter": "pipelinechannel--validate-data-Output"}
    for name in TRAINING:
        assert tasks[name]["cachingOptions"] == {"enableCache": True}, name
        assert tasks[name]["inputs"]["parameters"]["data_rev"] == commit, name
    for name in ("evaluate", "evaluate-2"):  # evaluation reads only the dataset fetched at that commit
        assert tasks[name]["inputs"]["artifacts"]["dataset"]["componentInputArtifact"] == \
            "pipelinechannel--validate-data-dataset", name
    for name in ("register", "register-2"):
        assert tasks[name]["inputs"]["parameters"]["data_rev"] == commit, name


def test_validate_data_fetches_at_a_revision_and_fails_on_bad_data(data_repo, tmp_path):
    from helpers.datasets import git

    revision = validate_data.python_func(
        data_repo=str(data_repo), data_rev="", data_path="data/synth",
        dataset=artifact(dsl.Dataset, tmp_path / "dataset"), report=artifact(dsl.HTML, tmp_path / "report.html"),
        summary=artifact(dsl.Metrics, tmp_path / "summary"))
    assert revision == git(data_repo, "rev-parse", "HEAD")
    assert (tmp_path / "dataset" / "manifest.jsonl").is_file() and (tmp_path / "report.html").is_file()
    with pytest.raises(FileNotFoundError, match="no dataset at 'data/other'"):
        validate_data.python_func(
            data_repo=str(data_repo), data_rev="", data_path="data/other",
            dataset=artifact(dsl.Dataset, tmp_path / "d2"), report=artifact(dsl.HTML, tmp_path / "r2.html"),
            summary=artifact(dsl.Metrics, tmp_path / "s2"))


class KubernetesAPIStub(JSONStubHandler):
    """Stands in for a Kubernetes API server (none can run here): it records requests to the
    InferenceService collection and answers create with 201, or 409 once the object exists."""

    objects: dict = {}
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        name = body["metadata"]["name"]
        if name in self.objects:
            return self._answer(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
        self.objects[name] = body
        self._answer(201, body)

    def do_PATCH(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("PATCH", self.path, body))
        self.objects[body["metadata"]["name"]] = body
        self._answer(200, body)

    def log_message(self, *args):
        pass


def test_deploy_creates_then_patches_the_inference_service(tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), KubernetesAPIStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stub",
        "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
        "users": [{"name": "stub", "user": {"token": "not-a-secret"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    try:
        for expected, uri in (("created", "s3://mlflow/artifacts/1/a/artifacts/model"),
                              ("patched", "s3://mlflow/artifacts/1/b/artifacts/model")):
            manifest = artifact(dsl.Artifact, tmp_path / f"{expected}.yaml")
            assert deploy.python_func(storage_uri=uri, endpoint_name="interactavatar",
                                      namespace="interactavatar-serving", gpu=1, apply=True, manifest=manifest) == expected
            assert yaml.safe_load((tmp_path / f"{expected}.yaml").read_text())["spec"]["predictor"]["model"]["storageUri"] == uri
    finally:
        server.shutdown()
    methods = [(method, path) for method, path, _ in KubernetesAPIStub.requests]
    collection = "/apis/serving.kserve.io/v1beta1/namespaces/interactavatar-serving/inferenceservices"
    assert methods == [("POST", collection), ("POST", collection), ("PATCH", f"{collection}/interactavatar")]
    patched = KubernetesAPIStub.requests[-1][2]
    assert patched["spec"]["predictor"]["model"]["storageUri"].endswith("/b/artifacts/model")
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(patched)


def test_deploy_without_a_cluster_writes_the_manifest_only(tmp_path):
    manifest = artifact(dsl.Artifact, tmp_path / "isvc.yaml")
    assert deploy.python_func(storage_uri="s3://models/x", endpoint_name="e", namespace="n", gpu=0, apply=False,
                              manifest=manifest) == "written"
    assert yaml.safe_load((tmp_path / "isvc.yaml").read_text())["metadata"]["name"] == "e"
    assert deploy.python_func(storage_uri="/local/mlruns/model", endpoint_name="e", namespace="n", gpu=0,
                              apply=False, manifest=manifest) == "not deployable"


def test_a_lora_champion_is_served_merged_into_its_base(model_dir, s3_server, tmp_path, monkeypatch):
    """The predictor cannot reach the registry for a LoRA version's base, so the pipeline writes the
    merged model for it; a whole model is served from its own artifact."""
    import torch
    from helpers.registry import register_as_champion

    from interactavatar.io.model_refs import MODEL_CACHE_ENV
    from interactavatar.io.storage import client, download_folder, ensure_bucket
    from interactavatar.model import lora
    from interactavatar.model.bundle import load_bundle, write_adapter_files
    from interactavatar.pipeline.steps import serving_copy

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    for key, value in {**s3_server.env(), "MLFLOW_TRACKING_URI": tracking,
                       MODEL_CACHE_ENV: str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)
    base = register_as_champion(model_dir, tracking)
    bundle = load_bundle(model_dir)
    cfg = lora.LoRAConfig(2, 4.0)
    bundle.model = lora.inject(bundle.model, cfg)
    with torch.no_grad():  # a trained adapter: B away from zero, so the merge changes the weights
        for name, parameter in bundle.model.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(std=0.05)
    write_adapter_files(bundle, cfg, f"models:/interactavatar/{base}", tmp_path / "adapter")
    ensure_bucket(client(), "models")

    assert serving_copy(model_dir, "s3://mlflow/artifacts/1/model", "s3://models/deployments/x/1") == \
        "s3://mlflow/artifacts/1/model"
    target = "s3://models/deployments/interactavatar/2"
    assert serving_copy(tmp_path / "adapter", "s3://mlflow/artifacts/2/model", target) == target
    download_folder(client(), target, tmp_path / "served")
    assert not (tmp_path / "served" / lora.ADAPTER_RECORD).exists()  # a plain model: no registry needed
    served, expected = load_bundle(tmp_path / "served").model.state_dict(), load_bundle(tmp_path / "adapter").model.state_dict()
    assert list(served) == list(load_bundle(model_dir).model.state_dict())
    assert all(torch.equal(served[key], expected[key]) for key in expected)
    assert not torch.equal(served["pim.blocks.0.ffn.0.weight"], load_bundle(model_dir).model.state_dict()[
        "pim.blocks.0.ffn.0.weight"])
    # A retried task finds the copy complete and leaves it.
    assert serving_copy(tmp_path / "adapter", "s3://mlflow/artifacts/2/model", target) == target
