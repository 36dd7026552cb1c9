"""What the pipeline's steps do, one function per KFP component: each takes the component's
artifacts (objects with `.path`, `.uri` and `.metadata`) and parameters, and calls the package.
The components in `components.py` are one call each; the logic lives here, tested directly."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


def validate_task(data_repo: str, data_rev: str, data_path: str, dataset, report, summary, gx_project) -> str:
    """Fetch the dataset at `data_rev` into `dataset`, validate it in a file-backed GX project made
    in `gx_project` (so the run keeps GX's stored result and Data Docs), write the report and the
    summary metrics; returns the resolved revision. A dataset with failures fails the task, each
    named, with the result stored first."""
    from interactavatar.data.validation import validate, write_reports
    from interactavatar.data.versioning import fetch_dataset

    revision = fetch_dataset(data_repo, data_rev, data_path, dataset.path)
    result = validate(dataset.path, gx_project=gx_project.path)
    write_reports(result, report.path)
    summary.log_metric("clips", result.num_clips)
    summary.log_metric("failures", len(result.failures))
    dataset.metadata.update({"data_rev": revision, "data_repo": data_repo, "data_path": data_path})
    project = Path(gx_project.path)
    gx_project.metadata.update({"success": result.success,
                                "validation_result": result.stored.result.relative_to(project).as_posix(),
                                "data_docs": result.stored.data_docs_index.relative_to(project).as_posix()})
    if not result.success:
        for failure in result.failures:
            print(f"{failure.path}: {failure.check}: {failure.reason}", file=sys.stderr)
        raise ValueError(f"{data_repo}@{revision}:{data_path}: {len(result.failures)} validation failure(s)")
    return revision


@dataclass(frozen=True)
class TrainingSettings:
    """The parameters every training component takes: the stage's budget and optimiser, its MLflow
    parent run, where it trains (`num_nodes` 1: in the task's pod, on its `task_gpus` GPUs; more: a
    Kubeflow Trainer TrainJob of that many nodes of `gpus_per_node` GPUs, runtime `trainer_runtime`
    in `trainer_namespace`, image `trainer_image`, inputs and output staged under
    `trainjob_staging_uri`), and the data's resolved commit."""

    preset: str
    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    parent_run_id: str
    num_nodes: int
    gpus_per_node: int
    trainer_runtime: str
    trainer_namespace: str
    trainer_image: str
    trainjob_staging_uri: str
    # GPUs of the task's own pod: more than one trains under torchrun, one process per GPU.
    task_gpus: int
    # The data's resolved commit (validate_data's output): a parameter of every training task, so
    # that KFP's cache key holds it and a cache hit means the same data, never a stale dataset.
    data_rev: str


def train_task(stage: str, dataset, output, settings: TrainingSettings, inputs: dict | None = None,
               curriculum: str | None = None, injection: str | None = None, init: str = "",
               video_crop: int = 0, lora_rank: int = 0, lora_alpha: float = 0.0) -> None:
    """Train `stage` on `dataset` into the `output` model artifact, from the `inputs` model artifacts
    the stage needs (by name: vae, pim, audio), or from the model `init` names (a warm start; with
    `lora_rank` > 0, LoRA adapters of that rank and `lora_alpha` (0: the rank) on the frozen init
    model). The output folder holds the checkpoints too, so a retried task on the same artifact path
    resumes instead of starting over."""
    from interactavatar.cluster.trainjob import TrainJobSettings
    from interactavatar.train.curriculum import Curriculum
    from interactavatar.train.engine import EngineConfig
    from interactavatar.train.stages import StageSpec

    options = {name: Path(artifact.path) for name, artifact in (inputs or {}).items()}
    if curriculum is not None:
        options["curriculum"] = Curriculum.parse(curriculum)
    if injection is not None:
        options["injection"] = injection
    if video_crop:
        options["vae_video_crop"] = video_crop
    if lora_rank:
        options.update(lora_rank=lora_rank, lora_alpha=lora_alpha or None)
    data_rev = settings.data_rev or None
    if data_rev != dataset.metadata.get("data_rev", data_rev):
        raise ValueError(f"train {stage}: data_rev {data_rev} is not the dataset's ({dataset.metadata['data_rev']})")
    spec = StageSpec(stage=stage, preset=settings.preset, data=Path(dataset.path), out=Path(output.path),
                     steps=settings.steps, seed=settings.seed, data_rev=data_rev, init=init or None,
                     # the run's MLflow dataset input names where the data came from, not the task's copy
                     data_repo=dataset.metadata.get("data_repo") or None,
                     data_path=dataset.metadata.get("data_path") or None,
                     engine=EngineConfig(micro_batch_size=settings.batch_size, learning_rate=settings.learning_rate),
                     parent_run_id=settings.parent_run_id or None, **options)
    nodes = TrainJobSettings(num_nodes=settings.num_nodes, gpus_per_node=settings.gpus_per_node,
                             runtime=settings.trainer_runtime, namespace=settings.trainer_namespace,
                             image=settings.trainer_image, staging_uri=settings.trainjob_staging_uri)
    train_stage(spec, nodes, output_uri=output.uri, task_gpus=settings.task_gpus)
    output.metadata["data_rev"] = data_rev or ""


def resolve_init_task(init_model: str, model_name: str) -> str:
    """`init_model` as the exact model a warm start trains from: "champion" -> the registry's
    champion now, as models:/NAME/VERSION (so every later read, a resume's included, gets the same
    version); another models:/ alias likewise; a URI or path as it is."""
    from interactavatar.io.model_refs import registry_name, registry_version

    reference = f"models:/{model_name}@champion" if init_model == "champion" else init_model
    if not reference.startswith("models:/"):
        return reference
    try:
        _, version = registry_version(reference)
    except ValueError as err:
        raise ValueError(f"init_model={init_model!r}: {err}; run the pipeline with init_model='' "
                         "(from scratch) until a version is registered") from err
    pinned = f"models:/{registry_name(reference)}/{version}"
    print(f"init_model={init_model!r}: {pinned}", file=sys.stderr)
    return pinned


def vae_task(dataset, vae, settings: TrainingSettings, vae_weights_uri: str, video_crop: int = 0) -> None:
    """Train the VAE (video steps on `video_crop`-pixel crops; 0: whole frames), or take pretrained
    weights from `vae_weights_uri` (s3:// or a folder)."""
    if not vae_weights_uri:
        train_task("vae", dataset, vae, settings, video_crop=video_crop)
        return
    if vae_weights_uri.startswith("s3://"):
        from interactavatar.io.storage import client, download_folder

        download_folder(client(), vae_weights_uri, vae.path)
    else:
        shutil.copytree(vae_weights_uri, vae.path, dirs_exist_ok=True)
    vae.metadata["source"] = vae_weights_uri


def train_stage(spec, nodes, output_uri: str, task_gpus: int = 1) -> Path:
    """Train the stage `spec` (a `train.stages.StageSpec`) in the task's own pod when `nodes` (a
    `trainjob.TrainJobSettings`) asks for one node: in this process with at most one GPU, else
    under torchrun with one process per GPU (`task_gpus`); on more nodes, as a Kubeflow Trainer
    TrainJob. `output_uri` is the calling task's output artifact URI (it names the job). Either way
    the model directory ends up in `spec.out`."""
    if nodes.num_nodes == 1 and task_gpus > 1:
        from interactavatar.train.commands import spec_to_argv

        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={task_gpus}",
                   "-m", "interactavatar.cli", *spec_to_argv(spec)]
        subprocess.run(command, check=True)
        return spec.out
    if nodes.num_nodes == 1:
        from interactavatar.train.stages import run_stage

        return run_stage(spec)
    from interactavatar.cluster.trainjob import run_stage_as_train_job

    return run_stage_as_train_job(spec, nodes, output_uri)


# Requests of a task's pod (CPU, memory): a GPU node's share for a paper-size stage; without GPUs a
# laptop cluster's (floors, not caps: no limit is set), as the local overlay gives the predictor.
GPU_TASK_REQUESTS = ("8", "64G")
CPU_TASK_REQUESTS = ("1", "4G")


def placement_task(gpus: int) -> dict:
    """Where a task asking for `gpus` GPUs runs, as KFP's task settings take it at run time: with
    GPUs, the accelerator (the GPU resource, limited to `gpus`), the GPU nodes' selector, their
    taint tolerated and a GPU node's requests; with none, no accelerator ("" sets no limit at
    all), no node selector, no toleration and a CPU node's requests."""
    from interactavatar.serve.isvc import GPU_NODE_SELECTOR, GPU_RESOURCE, GPU_TOLERATION

    if gpus < 0:
        raise ValueError(f"gpus: {gpus} must not be negative")
    cpu, memory = GPU_TASK_REQUESTS if gpus else CPU_TASK_REQUESTS
    if not gpus:
        return {"accelerator": "", "gpus": 0, "node_selector": {}, "tolerations": [], "cpu": cpu, "memory": memory}
    return {"accelerator": GPU_RESOURCE, "gpus": gpus, "node_selector": dict(GPU_NODE_SELECTOR),
            "tolerations": [dict(GPU_TOLERATION)], "cpu": cpu, "memory": memory}


def resolve_champion_task(model_name: str) -> str:
    """The registry's champion now, as models:/NAME/VERSION: the baseline a new version is scored
    against; "" when there is none yet (the first version is scored against the floor)."""
    from interactavatar.registry.mlflow import champion_version

    version = champion_version(model_name)
    pinned = f"models:/{model_name}/{version}" if version else ""
    print(f"baseline: {pinned or 'none (no champion yet): the untrained floor'}", file=sys.stderr)
    return pinned


def evaluate_task(dataset, model, split: str, num_clips: int, steps: int, seed: int, baseline: str,
                  model_name: str, parent_run_id: str, metrics, metrics_file, report) -> None:
    """Score the model on `split` (0 clips or steps: all clips, the preset's steps), and `baseline`
    (a pinned model reference; "": none) on the same clips, into the metrics.json and report
    artifacts (intervals at the level of `model_name`'s gate policy), and log the model's metrics
    for the KFP UI."""
    import tempfile

    from interactavatar.evaluate.run import METRICS_FILE, REPORT_FILE, EvaluationSettings, evaluate
    from interactavatar.registry.mlflow import gate_policy

    level = gate_policy(model_name).level

    with tempfile.TemporaryDirectory() as out:
        result = evaluate(EvaluationSettings(
            model_dir=Path(model.path), data_dir=Path(dataset.path), out_dir=Path(out), split=split,
            num_clips=num_clips or None, steps=steps or None, seed=seed, parent_run_id=parent_run_id or None,
            data_rev=dataset.metadata.get("data_rev"), baseline=baseline or None, level=level))
        shutil.copyfile(Path(out) / METRICS_FILE, metrics_file.path)
        shutil.copyfile(Path(out) / REPORT_FILE, report.path)
    for name, value in result["model"].items():
        if isinstance(value, (int, float)):
            metrics.log_metric(name, value)


def register_task(model, metrics_file, model_name: str, data_rev: str, parent_run_id: str,
                  artifacts_destination: str, registration) -> str:
    """Register the model with its lineage; returns the champion's storage URI when the gate promoted
    it, else "" (the deploy condition)."""
    import json
    from dataclasses import asdict

    from interactavatar.registry.mlflow import lineage_tags, register, resolve

    tags = lineage_tags(model.path, data_rev=data_rev, pipeline_run_id=parent_run_id)
    result = register(model.path, metrics_file.path, model_name, tags)
    print(f"{model_name} version {result.version}: {'promoted' if result.promoted else 'not promoted'}: "
          f"{result.reason}", file=sys.stderr)
    uri = resolve(f"models:/{model_name}@champion", artifacts_destination=artifacts_destination or None)
    if result.promoted:
        uri = serving_copy(Path(model.path), uri, f"{artifacts_destination.rstrip('/')}/deployments/{model_name}/"
                                                  f"{result.version}")
    Path(registration.path).write_text(json.dumps({**asdict(result), "storage_uri": uri, **tags}, indent=1))
    registration.metadata.update(version=result.version, promoted=result.promoted, storage_uri=uri,
                                 reason=result.reason)
    return uri if result.promoted else ""


def serving_copy(model_dir: Path, champion_uri: str, target_uri: str) -> str:
    """The URI the endpoint loads the champion from: the version's own artifact for a whole model;
    for a LoRA version, its adapter merged into its base, written once to `target_uri` (s3://).

    A LoRA version holds only its adapter and the registry reference of its base. The predictor is
    not admitted to MLflow (k8s/serving/networkpolicy.yaml: MLflow has no login, and its artifact
    proxy writes), so it could not fetch the base: the pipeline, which can, merges here, and the
    predictor downloads a plain model directory with the storage initializer as for any version.
    """
    from interactavatar.io.storage import client, object_sizes, upload_bytes, upload_folder
    from interactavatar.model.bundle import load_bundle, save_bundle
    from interactavatar.model.lora import ADAPTER_RECORD

    if not (model_dir / ADAPTER_RECORD).is_file() or not target_uri.startswith("s3://"):
        return champion_uri  # a whole model; or a local run, with no S3 and no endpoint to serve it
    s3 = client()
    if "config.yaml" in object_sizes(s3, target_uri):  # written by an earlier try of this task
        return target_uri
    with tempfile.TemporaryDirectory() as scratch:
        merged = save_bundle(load_bundle(model_dir), Path(scratch) / "model")
        # config.yaml last: a folder with a config is complete (the check above relies on it).
        upload_folder(s3, merged, target_uri, exclude=("config.yaml",))
        upload_bytes(s3, (merged / "config.yaml").read_bytes(), f"{target_uri}/config.yaml")
    print(f"LoRA champion merged into its base for serving: {target_uri}", file=sys.stderr)
    return target_uri


# How long the deploy step waits for the endpoint to be Ready: KServe pulls the image and the model,
# and a paper-size model loads for minutes (the ServingRuntime's startup probe allows 15).
DEPLOY_READY_TIMEOUT_S = 30 * 60


def deploy(storage_uri: str, name: str, namespace: str, manifest_path: str | Path, apply: bool,
           gpu: int = 1, ready_timeout_s: float = DEPLOY_READY_TIMEOUT_S) -> str:
    """Write the InferenceService for `storage_uri`; with `apply`, point the cluster's endpoint at it
    (its storageUri patched, or the InferenceService created with `gpu` GPUs where there is none:
    `cluster.endpoint`) and wait until it is Ready. Returns "created", "patched", "written", or
    "not deployable" for a model that is not on S3 (a run on a bare MLflow store, with no cluster
    to deploy to anyway)."""
    from interactavatar.serve.isvc import build_inference_service, render_manifest

    if not storage_uri.startswith("s3://") and not apply:
        Path(manifest_path).write_text(f"# not deployable: {storage_uri} is not an s3:// URI\n")
        return "not deployable"

    isvc = build_inference_service(name=name, namespace=namespace, storage_uri=storage_uri, gpu=gpu)
    Path(manifest_path).write_text(render_manifest(isvc))
    if not apply:
        return "written"
    from interactavatar.cluster.endpoint import deploy_inference_service

    return deploy_inference_service(isvc, ready_timeout_s)
