"""The InteractAvatar training pipeline: versioned data in, a live endpoint out."""

from kfp import dsl, kubernetes

from interactavatar.cluster.names import (
    ENDPOINT_KEYS,
    ENDPOINTS_CONFIG_MAP,
    IMAGE,
    IMAGE_UID,
    S3_SECRET,
    S3_SECRET_KEYS,
    TRAINER_RUNTIME,
)
from interactavatar.config import MODEL_NAME
from interactavatar.pipeline.components import (
    audio_pretrain,
    deploy,
    evaluate,
    joint_finetune,
    pim_pretrain,
    placement,
    register,
    resolve_champion,
    resolve_init_model,
    vae_pretrain,
    validate_data,
    warm_start_finetune,
)


def _with_cluster_settings(task, display_name: str, placement=None):
    """The task's display name; S3 keys and endpoints from the cluster's Secret and ConfigMap (never
    inline). Every task runs as the image's unprivileged user (KFP's compiler adds no privilege
    escalation, no capabilities and the RuntimeDefault seccomp profile). A compute task (training,
    evaluation) takes where it runs from `placement`, a `placement` task of the same DAG: its
    accelerator, node selector, tolerations and requests, resolved when KFP starts the task, so a
    GPU node, its taint tolerated and a GPU limit come only when GPUs are requested; it also gets a
    RAM-backed /dev/shm for data loading, and one retry. A local run ignores all but the name and
    the retries."""
    task.set_display_name(display_name)
    kubernetes.set_security_context(task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID, run_as_non_root=True)
    kubernetes.use_secret_as_env(task, S3_SECRET, {key: key for key in S3_SECRET_KEYS})
    kubernetes.use_config_map_as_env(task, ENDPOINTS_CONFIG_MAP, {key: key for key in ENDPOINT_KEYS})
    if placement is not None:
        where = placement.outputs
        # Accelerator "" (no GPUs) sets no limit at all: KFP's driver skips an empty type.
        task.set_accelerator_type(where["accelerator"]).set_accelerator_limit(where["gpus"])
        task.set_cpu_request(where["cpu"]).set_memory_request(where["memory"])
        kubernetes.add_node_selector_json(task, where["node_selector"])
        kubernetes.add_toleration_json(task, where["tolerations"])
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
        # Nodes get preempted: a retried multi-node training task resumes its TrainJob from the
        # checkpoints mirrored on S3. One retry only: a real error should surface, not repeat.
        task.set_retry(num_retries=1)
    return task


def _placement(gpus, display_name: str):
    """A `placement` task for `gpus` GPUs, in the DAG that uses it: KFP passes a task's output into
    a condition's DAG only as a task argument, and resource settings are not arguments."""
    task = placement(gpus=gpus)
    _with_cluster_settings(task, display_name)
    return task


def _evaluate_register_deploy(trained, dataset, data_rev, p: dict) -> None:
    """Steps 6 to 8 for the model either branch trained (`trained`: its training task; `p`: the
    pipeline's parameters)."""
    # The champion when training is done, the closest to registration a pinned baseline can be.
    champion = resolve_champion(model_name=p["model_name"]).after(trained)
    champion.set_caching_options(False)  # the champion moves
    scored = evaluate(dataset=dataset, model=trained.outputs["model"], split=p["eval_split"],
                      num_clips=p["eval_clips"], steps=p["eval_steps"], seed=p["seed"], baseline=champion.output,
                      model_name=p["model_name"], parent_run_id=p["parent_run_id"])
    registered = register(model=trained.outputs["model"], metrics_file=scored.outputs["metrics_file"],
                          model_name=p["model_name"], data_rev=data_rev,
                          parent_run_id=p["parent_run_id"], artifacts_destination=p["artifacts_destination"])
    # The registry and the cluster are state outside the pipeline: never reuse a cached answer.
    registered.set_caching_options(False)
    _with_cluster_settings(champion, "Resolve the champion (the baseline)")
    _with_cluster_settings(scored, "Evaluate against the champion",
                           _placement(p["eval_gpus"], "Placement of the evaluation (GPUs or CPU)"))
    _with_cluster_settings(registered, "Register in MLflow (gate)")

    with dsl.If(registered.outputs["Output"] != ""):  # the champion's URI, only when promoted
        deployed = deploy(storage_uri=registered.outputs["Output"], endpoint_name=p["endpoint_name"],
                          namespace=p["endpoint_namespace"], gpu=p["endpoint_gpus"], apply=p["apply_deployment"])
        deployed.set_caching_options(False)
        _with_cluster_settings(deployed, "Deploy the champion (KServe)")


@dsl.pipeline(name="interactavatar-training")
def interactavatar_pipeline(
    data_repo: str,
    data_rev: str = "",
    data_path: str = "data/synth",
    init_model: str = "",
    preset: str = "demo",
    vae_weights_uri: str = "",
    vae_steps: int = 300,
    vae_video_crop: int = 0,
    pim_steps: int = 600,
    audio_steps: int = 300,
    joint_steps: int = 300,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    vae_batch_size: int = 2,
    pim_batch_size: int = 16,
    pim_learning_rate: float = 2e-3,
    seed: int = 0,
    curriculum: str = "1,1,1",
    injection: str = "residual",
    lora_rank: int = 0,
    lora_alpha: float = 0.0,
    eval_split: str = "test",
    eval_clips: int = 8,
    eval_steps: int = 0,
    eval_gpus: int = 1,
    model_name: str = MODEL_NAME,
    endpoint_name: str = "interactavatar",
    endpoint_namespace: str = "interactavatar-serving",
    endpoint_gpus: int = 1,
    apply_deployment: bool = True,
    artifacts_destination: str = "s3://mlflow/artifacts",
    train_num_nodes: int = 1,
    train_gpus_per_node: int = 1,
    train_task_gpus: int = 1,
    trainer_runtime: str = TRAINER_RUNTIME,
    trainer_namespace: str = "kubeflow",
    trainjob_staging_uri: str = "s3://models/trainjobs",
    parent_run_id: str = "",
):
    """Train, evaluate, register and deploy InteractAvatar from a DVC-versioned dataset.

    1. validate_data: fetch the dataset at `data_rev` with DVC, resolved to a commit, and validate
       it (Great Expectations). Never cached: every later step takes the commit as a parameter, so
       a cache hit downstream means the same data.
    2. resolve_init_model: `init_model` pinned now ("": from scratch; "champion": the registry's
       champion as models:/NAME/VERSION; another models:/ reference, an s3:// URI or a path).
    From scratch:
      3. vae_pretrain: train the shared VAE (or take `vae_weights_uri`).
      4. pim_pretrain and audio_pretrain, in parallel: PIM on its detection / continuation /
         generation curriculum; AIM with audio and no motion.
      5. joint_finetune: both streams and the M2V aligner from those two checkpoints.
    Warm start (a scheduled retraining, `init_model=champion`):
      3. warm_start_finetune: the init model, whole, fine-tuned on the new data (`joint_steps`); its
         VAE and encoders come with it, and its lineage names the init version as the parent. With
         `lora_rank` > 0, LoRA adapters (`lora_alpha`) on the frozen init model instead: the new
         version holds the adapter and its base's version.
    Then, either way:
      6. resolve_champion, then evaluate: generate on the held-out split; score the model and the
         champion (the baseline) on the same clips and seeds, and an untrained floor and the ground
         truth; per metric, the paired difference's interval at the gate policy's level.
      7. register: a new MLflow model version; the registered model's gate policy (set by an admin,
         `interactavatar registry policy set`, not by this run) decides whether it becomes
         `champion`: the primary metric's gain over the champion (over the floor, for the first
         version) must lie above its margin, and no guard may show a loss beyond its tolerance.
      8. deploy, only when the gate promoted: the champion behind a KServe InferenceService.

    Training stages run in their task's pod (`train_task_gpus` GPUs) unless `train_num_nodes` > 1:
    then each training task launches a Kubeflow Trainer TrainJob of that many nodes with
    `train_gpus_per_node` GPUs each (runtime `trainer_runtime`, in `trainer_namespace`, inputs and
    output staged under `trainjob_staging_uri`) and waits for it; set `train_task_gpus` to 0 then,
    since the task itself only waits.

    GPUs are asked for only where a count is above 0: `train_task_gpus` (training tasks),
    `eval_gpus` (evaluation), `endpoint_gpus` (the predictor, when deploy creates the
    InferenceService). At 0 a task gets no GPU limit, GPU node selector or toleration, and a CPU
    node's requests (a `placement` task computes them for its DAG).
    """
    params = dict(eval_split=eval_split, eval_clips=eval_clips, eval_steps=eval_steps, eval_gpus=eval_gpus,
                  seed=seed,
                  parent_run_id=parent_run_id, model_name=model_name,
                  artifacts_destination=artifacts_destination, endpoint_name=endpoint_name,
                  endpoint_namespace=endpoint_namespace, endpoint_gpus=endpoint_gpus,
                  apply_deployment=apply_deployment)

    validated = validate_data(data_repo=data_repo, data_rev=data_rev, data_path=data_path)
    validated.set_caching_options(False)  # "HEAD" or a branch names new data on every run
    _with_cluster_settings(validated, "Validate data (DVC + Great Expectations)")
    dataset, commit = validated.outputs["dataset"], validated.outputs["Output"]
    init = resolve_init_model(init_model=init_model, model_name=model_name)
    init.set_caching_options(False)  # "champion" moves
    _with_cluster_settings(init, "Resolve the init model")
    where = dict(parent_run_id=parent_run_id, num_nodes=train_num_nodes, gpus_per_node=train_gpus_per_node,
                 trainer_runtime=trainer_runtime, trainer_namespace=trainer_namespace, trainer_image=IMAGE,
                 trainjob_staging_uri=trainjob_staging_uri, task_gpus=train_task_gpus, data_rev=commit)

    with dsl.If(init.output == "", name="from-scratch"):
        training = _placement(train_task_gpus, "Placement of the training tasks (GPUs or CPU)")
        # The VAE trains on whole clips: batch 2 of 17 frames costs what 4 of 9 or 8 of 5 did.
        vae = vae_pretrain(dataset=dataset, vae_weights_uri=vae_weights_uri, preset=preset, steps=vae_steps,
                           video_crop=vae_video_crop, batch_size=vae_batch_size, learning_rate=learning_rate,
                           seed=seed, **where)
        # PIM learns grounding from a larger batch at a higher rate than the other stages can afford
        # (it is the cheapest stream: a few hundred tokens, no audio).
        pim = pim_pretrain(dataset=dataset, vae=vae.outputs["vae"], curriculum=curriculum, preset=preset,
                           steps=pim_steps, batch_size=pim_batch_size, learning_rate=pim_learning_rate, seed=seed,
                           **where)
        audio = audio_pretrain(dataset=dataset, vae=vae.outputs["vae"], preset=preset, steps=audio_steps,
                               batch_size=batch_size, learning_rate=learning_rate, seed=seed, **where)
        joint = joint_finetune(dataset=dataset, vae=vae.outputs["vae"], pim=pim.outputs["pim"],
                               audio=audio.outputs["audio"], injection=injection, preset=preset, steps=joint_steps,
                               batch_size=batch_size, learning_rate=learning_rate, seed=seed, **where)
        _with_cluster_settings(vae, "VAE pretrain", training)
        _with_cluster_settings(pim, "PIM pretrain (curriculum)", training)
        _with_cluster_settings(audio, "AIM audio pretrain", training)
        _with_cluster_settings(joint, "Joint fine-tune", training)
        _evaluate_register_deploy(joint, dataset, commit, params)

    with dsl.Else(name="warm-start"):
        training = _placement(train_task_gpus, "Placement of the training task (GPUs or CPU)")
        tuned = warm_start_finetune(dataset=dataset, init_model=init.output, injection=injection, lora_rank=lora_rank,
                                    lora_alpha=lora_alpha, preset=preset, steps=joint_steps, batch_size=batch_size,
                                    learning_rate=learning_rate, seed=seed, **where)
        _with_cluster_settings(tuned, "Warm-start fine-tune (from the init model)", training)
        _evaluate_register_deploy(tuned, dataset, commit, params)
