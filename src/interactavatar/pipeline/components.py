"""The pipeline's KFP components, one per step. Each maps its typed inputs and artifacts onto one
function of `interactavatar.pipeline.steps` and does nothing else.

They are lightweight Python components whose base image is the project's image (Dockerfile at the
repository root), so the package is importable inside them; they install nothing. KFP runs a
component's source on its own, so every import is inside its body and no argument has a default
that names a constant: the pipeline's parameters hold the defaults.

The training components share these arguments (`steps.TrainingSettings`):

    preset: model size preset (tiny, demo, paper).
    steps, batch_size, learning_rate, seed: the stage's budget and optimiser.
    parent_run_id: MLflow run to nest the stage's run under (empty: none).
    num_nodes: training nodes (1: train in the task's own pod; more: a Kubeflow Trainer TrainJob).
    gpus_per_node: GPUs of each TrainJob node.
    trainer_runtime: the ClusterTrainingRuntime of the TrainJob (k8s/training: `interactavatar-torch`, hardened).
    trainer_namespace: where the TrainJob runs (holding the S3 Secret and endpoints ConfigMap).
    trainer_image: the nodes' image (this project's image).
    trainjob_staging_uri: s3:// prefix where the job's inputs and output model directory are staged.
    task_gpus: GPUs of the task's own pod (its accelerator limit): more than one trains under
        torchrun, one process per GPU.
    data_rev: the data's resolved commit (validate_data's output), so that KFP caches per commit.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from interactavatar.cluster.names import IMAGE

__all__ = ["placement", "validate_data", "resolve_init_model", "vae_pretrain", "pim_pretrain", "audio_pretrain", "joint_finetune",
           "warm_start_finetune", "resolve_champion", "evaluate", "register", "deploy"]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def placement(gpus: int) -> NamedTuple("Placement", accelerator=str, gpus=int, node_selector=dict, tolerations=list,
                                       cpu=str, memory=str):
    """Where a task asking for `gpus` GPUs runs: its outputs are the GPU tasks' accelerator, node
    selector, tolerations and CPU and memory requests, which KFP resolves when it starts each of
    them, so GPU settings are set only when GPUs are requested.

    Args:
        gpus: the GPUs the tasks ask for (0: CPU tasks: no accelerator, selector or toleration).
    Returns:
        accelerator ("" for none), gpus (its limit), node_selector, tolerations, cpu, memory.
    """
    from collections import namedtuple

    from interactavatar.pipeline.steps import placement_task

    settings = placement_task(gpus)
    return namedtuple("Placement", settings)(**settings)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_data(data_repo: str, data_rev: str, data_path: str, dataset: Output[Dataset],
                  report: Output[HTML], summary: Output[Metrics], gx_project: Output[Artifact]) -> str:
    """Fetch the dataset at a DVC revision and validate it with Great Expectations.

    Args:
        data_repo: git repository (URL or local path) whose DVC files track the dataset.
        data_rev: git revision of the data (a tag, branch or commit; empty: HEAD).
        data_path: the dataset folder inside the repository (e.g. data/synth).
        dataset: the fetched dataset, passed on to training and evaluation.
        report: the validation report (HTML, offline).
        summary: clip count and failure count.
        gx_project: the run's file-backed GX project: the suite, the checkpoint, the stored
            validation result and GX's Data Docs (paths in its metadata).
    Returns:
        The resolved data revision, the lineage tag of everything trained on it.
    """
    from interactavatar.pipeline.steps import validate_task

    return validate_task(data_repo, data_rev, data_path, dataset, report, summary, gx_project)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def resolve_init_model(init_model: str, model_name: str) -> str:
    """The model a warm start trains from, pinned now.

    Args:
        init_model: "" (from scratch), "champion", a models:/ reference, an s3:// URI or a path.
        model_name: the registered model whose champion "champion" means.
    Returns:
        "" for scratch; models:/NAME/VERSION for a registry reference (an alias resolved to the
        version it names now); a URI or path as it is.
    """
    from interactavatar.pipeline.steps import resolve_init_task

    return resolve_init_task(init_model, model_name) if init_model else ""


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def vae_pretrain(dataset: Input[Dataset], preset: str, steps: int, batch_size: int, learning_rate: float,
                 seed: int, vae_weights_uri: str, video_crop: int, parent_run_id: str, vae: Output[Model], num_nodes: int,
                 gpus_per_node: int, trainer_runtime: str, trainer_namespace: str, trainer_image: str,
                 trainjob_staging_uri: str, task_gpus: int, data_rev: str):
    """Train the shared VAE, or take pretrained weights when `vae_weights_uri` is given.

    Args:
        dataset: the validated dataset.
        vae_weights_uri: s3:// or local folder with config.yaml + model.safetensors; empty: train.
        video_crop: train video steps on random square crops of this many pixels (0: whole frames).
        vae: the VAE folder.
        preset ... data_rev: the training settings (module docstring).
    """
    from interactavatar.pipeline.steps import TrainingSettings, vae_task

    settings = TrainingSettings(preset, steps, batch_size, learning_rate, seed, parent_run_id, num_nodes,
                                gpus_per_node, trainer_runtime, trainer_namespace, trainer_image, trainjob_staging_uri,
                                task_gpus, data_rev)
    vae_task(dataset, vae, settings, vae_weights_uri, video_crop)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def pim_pretrain(dataset: Input[Dataset], vae: Input[Model], preset: str, steps: int, batch_size: int,
                 learning_rate: float, seed: int, curriculum: str, parent_run_id: str, pim: Output[Model],
                 num_nodes: int, gpus_per_node: int, trainer_runtime: str, trainer_namespace: str,
                 trainer_image: str, trainjob_staging_uri: str, task_gpus: int, data_rev: str):
    """PIM pretrain on the detection / continuation / generation curriculum.

    Args:
        curriculum: "detection,continuation,generation" weights ("0,1,1": the no-detection ablation).
        pim: the model directory (PIM trained).
        preset ... data_rev: the training settings (module docstring).
    """
    from interactavatar.pipeline.steps import TrainingSettings, train_task

    settings = TrainingSettings(preset, steps, batch_size, learning_rate, seed, parent_run_id, num_nodes,
                                gpus_per_node, trainer_runtime, trainer_namespace, trainer_image, trainjob_staging_uri,
                                task_gpus, data_rev)
    train_task("pim", dataset, pim, settings, inputs={"vae": vae}, curriculum=curriculum)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def audio_pretrain(dataset: Input[Dataset], vae: Input[Model], preset: str, steps: int, batch_size: int,
                   learning_rate: float, seed: int, parent_run_id: str, audio: Output[Model], num_nodes: int,
                   gpus_per_node: int, trainer_runtime: str, trainer_namespace: str, trainer_image: str,
                   trainjob_staging_uri: str, task_gpus: int, data_rev: str):
    """AIM audio pretrain: audio and text conditioning, no motion.

    Args:
        audio: the model directory (AIM trained with audio).
        preset ... data_rev: the training settings (module docstring).
    """
    from interactavatar.pipeline.steps import TrainingSettings, train_task

    settings = TrainingSettings(preset, steps, batch_size, learning_rate, seed, parent_run_id, num_nodes,
                                gpus_per_node, trainer_runtime, trainer_namespace, trainer_image, trainjob_staging_uri,
                                task_gpus, data_rev)
    train_task("audio", dataset, audio, settings, inputs={"vae": vae})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def joint_finetune(dataset: Input[Dataset], vae: Input[Model], pim: Input[Model], audio: Input[Model],
                   preset: str, steps: int, batch_size: int, learning_rate: float, seed: int, injection: str,
                   parent_run_id: str, model: Output[Model], num_nodes: int, gpus_per_node: int,
                   trainer_runtime: str, trainer_namespace: str, trainer_image: str, trainjob_staging_uri: str,
                   task_gpus: int, data_rev: str):
    """Joint fine-tune of both streams and the M2V aligner.

    Args:
        injection: how PIM reaches AIM: residual (the release), last or add (ablations).
        model: the final model directory.
        preset ... data_rev: the training settings (module docstring).
    """
    from interactavatar.pipeline.steps import TrainingSettings, train_task

    settings = TrainingSettings(preset, steps, batch_size, learning_rate, seed, parent_run_id, num_nodes,
                                gpus_per_node, trainer_runtime, trainer_namespace, trainer_image, trainjob_staging_uri,
                                task_gpus, data_rev)
    train_task("joint", dataset, model, settings, inputs={"vae": vae, "pim": pim, "audio": audio}, injection=injection)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def warm_start_finetune(dataset: Input[Dataset], init_model: str, preset: str, steps: int, batch_size: int,
                        learning_rate: float, seed: int, injection: str, lora_rank: int, lora_alpha: float,
                        parent_run_id: str, model: Output[Model], num_nodes: int, gpus_per_node: int,
                        trainer_runtime: str, trainer_namespace: str, trainer_image: str, trainjob_staging_uri: str,
                        task_gpus: int, data_rev: str):
    """Joint fine-tune of a whole model (both streams, the aligner) on new data, or of LoRA adapters
    on it.

    Args:
        init_model: the model to start from, pinned (resolve_init_model's output); its VAE and frozen
            encoders come with it, and the new model's lineage names it as the parent.
        injection: must be the init model's.
        lora_rank: 0 fine-tunes the whole model; more trains adapters of that rank (the aligner and
            norms whole), and the model is an adapter over the init version (a registry version).
        lora_alpha: the adapters' scale numerator (0: the rank).
        model: the final model directory.
        preset ... data_rev: the training settings (module docstring).
    """
    from interactavatar.pipeline.steps import TrainingSettings, train_task

    settings = TrainingSettings(preset, steps, batch_size, learning_rate, seed, parent_run_id, num_nodes,
                                gpus_per_node, trainer_runtime, trainer_namespace, trainer_image, trainjob_staging_uri,
                                task_gpus, data_rev)
    train_task("joint", dataset, model, settings, injection=injection, init=init_model, lora_rank=lora_rank,
               lora_alpha=lora_alpha)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def resolve_champion(model_name: str) -> str:
    """The registry's champion now, pinned: the baseline the new version is scored against.

    Args:
        model_name: the registered model.
    Returns:
        models:/NAME/VERSION, or "" when there is no champion yet (the floor is the baseline).
    """
    from interactavatar.pipeline.steps import resolve_champion_task

    return resolve_champion_task(model_name)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(dataset: Input[Dataset], model: Input[Model], split: str, num_clips: int, steps: int, seed: int,
             baseline: str, model_name: str, parent_run_id: str, metrics: Output[Metrics],
             metrics_file: Output[Artifact], report: Output[HTML]):
    """Generate on the held-out split and score the model, the baseline, an untrained floor and the
    ground truth on the same clips and seeds.

    Args:
        split: the held-out split (test).
        num_clips: clips to evaluate (0: all).
        steps: sampling steps (0: the preset's).
        baseline: the champion, pinned (resolve_champion's output; "": none yet).
        model_name: the registered model, whose gate policy sets the intervals' level.
        metrics: the model's metrics, shown in the KFP UI.
        metrics_file: metrics.json, read by the register step.
        report: the HTML report.
    """
    from interactavatar.pipeline.steps import evaluate_task

    evaluate_task(dataset, model, split, num_clips, steps, seed, baseline, model_name, parent_run_id, metrics,
                  metrics_file, report)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(model: Input[Model], metrics_file: Input[Artifact], model_name: str, data_rev: str, parent_run_id: str, artifacts_destination: str, registration: Output[Artifact]) -> str:
    """Register the model in MLflow; the registered model's gate policy decides whether it becomes
    the champion (set by an admin: `interactavatar registry policy set`, never by a run).

    Args:
        model_name: the registered model's name.
        data_rev: the data revision (lineage tag).
        parent_run_id: the pipeline's MLflow run (lineage tag).
        artifacts_destination: the MLflow server's --artifacts-destination (s3://...), to turn
            proxied artifact URIs into the bucket URI KServe downloads; empty: as MLflow gives it.
        registration: JSON with the new version, whether it was promoted, why, and the champion's URI.
    Returns:
        The champion's storage URI when this model was promoted, else "" (the deploy condition: a
        single output, since KFP's local runner cannot branch on a field of a NamedTuple).
    """
    from interactavatar.pipeline.steps import register_task

    return register_task(model, metrics_file, model_name, data_rev, parent_run_id,
                         artifacts_destination, registration)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(storage_uri: str, endpoint_name: str, namespace: str, gpu: int, apply: bool, manifest: Output[Artifact]) -> str:
    """Put the champion behind a KServe InferenceService (created, or patched into a rollout).

    Args:
        storage_uri: the champion's s3:// URI (KServe's storage initializer downloads it).
        endpoint_name, namespace: the InferenceService's name and namespace.
        gpu: GPUs for the predictor (0: CPU).
        apply: False writes the manifest only (a run without a cluster).
        manifest: the InferenceService YAML.
    Returns:
        "created", "patched" or "written".
    """
    from interactavatar.pipeline.steps import deploy as deploy_model

    return deploy_model(storage_uri, endpoint_name, namespace, manifest.path, apply=apply, gpu=gpu)
