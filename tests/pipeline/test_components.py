"""Components called as plain Python functions, and the compiled pipeline kept in sync."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
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


def _is_placement(task: dict) -> bool:
    """A `placement` task (KFP numbers each use's component: comp-placement, comp-placement-2, ...)."""
    return re.fullmatch(r"comp-placement(-\d+)?", task["componentRef"]["name"]) is not None


TRAINING = ("vae-pretrain", "pim-pretrain", "audio-pretrain", "joint-finetune", "warm-start-finetune")


def test_pipeline_shape():
    spec, platform = yaml.safe_load_all((REPO / COMPILED).read_text())
    tasks = _tasks(spec)
    for name, task in tasks.items():
        if not name.startswith("condition"):
            assert task["taskInfo"]["name"] != name, f"{name}: no display name"
    # The data flow; placement tasks (where compute tasks run: test_gpu_settings_come_only_with_gpus) aside.
    placements = {name for name, task in tasks.items() if _is_placement(task)}
    dependencies = {name: set(task.get("dependentTasks", [])) - placements for name, task in tasks.items()}
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
        assert executor["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
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


COMPUTE = {**{name: "train_task_gpus" for name in TRAINING}, "evaluate": "eval_gpus", "evaluate-2": "eval_gpus"}
PLACEHOLDER = re.compile(r"^\{\{\$\.inputs\.parameters\['(.+)'\]\}\}$")


def _pod_settings(spec: dict, platform: dict, tasks: dict, name: str, placements: dict) -> dict:
    """What KFP's driver puts on the pod of task `name`, given each placement task's outputs
    (`placements`: task name -> outputs): its accelerator limit (none when the accelerator type
    resolves to "": the driver skips an empty type), requests, node selector and tolerations
    (JSON from a task output: {} and [] add nothing)."""
    task = tasks[name]

    def output(reference: dict):
        producer = reference["taskOutputParameter"]
        return placements[producer["producerTask"]][producer["outputParameterKey"]]

    def resolve(value: str):
        channel = PLACEHOLDER.match(value)
        return output(task["inputs"]["parameters"][channel[1]]) if channel else value

    resources = spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"].get("resources", {})
    accelerator = resources.get("accelerator", {})
    kind = resolve(accelerator.get("resourceType", ""))
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][f"exec-{name}"]
    node_selector = executor.get("nodeSelector", {})
    requests = {key: resolve(resources[f"resource{key.title()}Request"]) for key in ("cpu", "memory")
                if f"resource{key.title()}Request" in resources}
    tolerations = [t for toleration in executor.get("tolerations", [])
                   for t in (output(toleration["tolerationJson"]) if "tolerationJson" in toleration else [toleration])]
    return {
        "limits": {kind: int(resolve(accelerator["resourceCount"]))} if kind else {},
        "requests": requests,
        "node_selector": output(node_selector["nodeSelectorJson"]) if "nodeSelectorJson" in node_selector
        else node_selector.get("labels", {}),
        "tolerations": tolerations,
    }


@pytest.mark.parametrize("gpus", [0, 2])
def test_gpu_settings_come_only_with_gpus(gpus):
    """Training and evaluation take their accelerator, node selector, tolerations and requests from
    a placement task in their own DAG, fed the run's GPU count; resolved as KFP's driver does, 0
    GPUs gives no GPU limit, selector or toleration, and more gives all three. No other task
    asks for a GPU."""
    spec, platform = yaml.safe_load_all((REPO / COMPILED).read_text())
    tasks = _tasks(spec)
    placement_tasks = {name: task for name, task in tasks.items() if _is_placement(task)}
    placements = dict.fromkeys(placement_tasks, components.placement.python_func(gpus=gpus)._asdict())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, parameter in COMPUTE.items():
        (producer,) = {toleration["tolerationJson"]["taskOutputParameter"]["producerTask"]
                       for toleration in executors[f"exec-{name}"]["tolerations"]}
        assert placement_tasks[producer]["inputs"]["parameters"]["gpus"] == {
            "componentInputParameter": f"pipelinechannel--{parameter}"}, name
        settings = _pod_settings(spec, platform, tasks, name, placements)
        if gpus:
            assert settings == {"limits": {"nvidia.com/gpu": gpus}, "requests": {"cpu": "8", "memory": "64G"},
                                "node_selector": {"nvidia.com/gpu.present": "true"},
                                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                 "effect": "NoSchedule"}]}, name
        else:
            assert settings == {"limits": {}, "requests": {"cpu": "1", "memory": "4G"}, "node_selector": {},
                                "tolerations": []}, name
    for name in set(tasks) - set(COMPUTE):
        if not name.startswith("condition"):
            assert _pod_settings(spec, platform, tasks, name, placements) == {
                "limits": {}, "requests": {}, "node_selector": {}, "tolerations": []}, name


def test_placement_refuses_a_negative_gpu_count():
    with pytest.raises(ValueError, match="^gpus: -1 must not be negative"):
        components.placement.python_func(gpus=-1)


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

    revision = validate_data.python_func(data_repo=str(data_repo), data_rev="", data_path="data/synth",
                                         **validation_outputs(tmp_path / "ok"))
    assert revision == git(data_repo, "rev-parse", "HEAD")
    assert (tmp_path / "ok" / "dataset" / "manifest.jsonl").is_file() and (tmp_path / "ok" / "report").is_file()
    with pytest.raises(FileNotFoundError, match="no dataset at 'data/other'"):
        validate_data.python_func(data_repo=str(data_repo), data_rev="", data_path="data/other",
                                  **validation_outputs(tmp_path / "missing"))


def validation_outputs(folder):
    return {"dataset": artifact(dsl.Dataset, folder / "dataset"), "report": artifact(dsl.HTML, folder / "report"),
            "summary": artifact(dsl.Metrics, folder / "summary"),
            "gx_project": artifact(dsl.Artifact, folder / "gx_project")}


def test_validate_data_keeps_gx_s_stored_result_and_data_docs_of_a_failing_dataset(tmp_path):
    """The task's GX project artifact holds the suite, the checkpoint, the stored result and the
    Data Docs, written before a failing dataset fails the task; the report links the Data Docs."""
    from helpers.datasets import DVC, git, make_data_repo

    repo = make_data_repo(tmp_path, num_clips=3)
    (repo / "data" / "synth" / "synth5-000001" / "meta.json").write_text("{not json")
    subprocess.run([DVC, "add", "-q", "data/synth"], cwd=repo, check=True)
    git(repo, "commit", "-qam", "a broken clip")
    outputs = validation_outputs(tmp_path / "run")
    with pytest.raises(ValueError, match="1 validation failure"):
        validate_data.python_func(data_repo=str(repo), data_rev="", data_path="data/synth", **outputs)
    project = tmp_path / "run" / "gx_project"
    metadata = outputs["gx_project"].metadata
    assert metadata["success"] is False and (project / "gx" / "checkpoints" / "clip_dataset.json").is_file()
    stored = json.loads((project / metadata["validation_result"]).read_text())
    assert stored["success"] is False and stored["statistics"]["unsuccessful_expectations"] >= 1
    docs = project / metadata["data_docs"]
    assert docs.is_file() and "clip_dataset" in docs.read_text()
    assert "href='gx_project/gx/uncommitted/data_docs/local_site/index.html'" in (tmp_path / "run" / "report").read_text()


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
