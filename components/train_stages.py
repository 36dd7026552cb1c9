"""The four training stages. Each runs `interactavatar.train.stages.run_stage` on the CPU or the
GPUs of its pod; its --out (checkpoints included) is the output Model artifact, so a retried task
on the same artifact path resumes instead of starting over.

With `num_nodes` > 1 a stage trains on several nodes instead: the task launches a Kubeflow Trainer
TrainJob with the same training arguments, waits for it, and fetches its model directory
(`interactavatar.trainjob`). Every stage takes the same multi-node arguments (no defaults: KFP
runs a component's source on its own, so a default could not name a constant; the pipeline's
parameters hold the defaults):

    num_nodes: training nodes (1: train in this task's pod).
    gpus_per_node: GPUs of each TrainJob node.
    trainer_runtime: the ClusterTrainingRuntime of the TrainJob (Kubeflow Trainer's `torch-distributed`).
    trainer_namespace: where the TrainJob runs (holding the S3 Secret and endpoints ConfigMap).
    trainer_image: the nodes' image (this project's image).
    trainjob_staging_uri: s3:// prefix where the job's inputs and output model directory are staged.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def vae_pretrain(dataset: Input[Dataset], preset: str, steps: int, batch_size: int, learning_rate: float,
                 seed: int, vae_weights_uri: str, parent_run_id: str, vae: Output[Model], num_nodes: int,
                 gpus_per_node: int, trainer_runtime: str, trainer_namespace: str, trainer_image: str,
                 trainjob_staging_uri: str):
    """Train the shared causal VAE, or take pretrained weights when `vae_weights_uri` is given.

    Args:
        dataset: the validated dataset.
        preset: model size preset (tiny, demo, paper).
        steps, batch_size, learning_rate, seed: the stage's budget and optimiser.
        vae_weights_uri: s3:// or local folder with config.yaml + model.safetensors; empty: train.
        parent_run_id: MLflow run to nest this stage's run under (empty: none).
        vae: the VAE folder.
        num_nodes ... trainjob_staging_uri: multi-node training (module docstring).
    """
    from pathlib import Path

    from interactavatar.orchestration import train_stage
    from interactavatar.train.engine import EngineConfig
    from interactavatar.train.stages import StageSpec
    from interactavatar.trainjob import TrainJobSettings

    if vae_weights_uri:
        from interactavatar.storage import client, download_folder

        if vae_weights_uri.startswith("s3://"):
            download_folder(client(), vae_weights_uri, vae.path)
        else:
            import shutil

            shutil.copytree(vae_weights_uri, vae.path, dirs_exist_ok=True)
        vae.metadata["source"] = vae_weights_uri
        return
    nodes = TrainJobSettings(num_nodes=num_nodes, gpus_per_node=gpus_per_node, runtime=trainer_runtime,
                             namespace=trainer_namespace, image=trainer_image, staging_uri=trainjob_staging_uri)
    train_stage(StageSpec(stage="vae", preset=preset, data=Path(dataset.path), out=Path(vae.path), steps=steps,
                          seed=seed, engine=EngineConfig(micro_batch_size=batch_size, learning_rate=learning_rate),
                          data_rev=dataset.metadata.get("data_rev"), parent_run_id=parent_run_id or None),
                nodes, output_uri=vae.uri)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def pim_pretrain(dataset: Input[Dataset], vae: Input[Model], preset: str, steps: int, batch_size: int,
                 learning_rate: float, seed: int, curriculum: str, parent_run_id: str, pim: Output[Model],
                 num_nodes: int, gpus_per_node: int, trainer_runtime: str, trainer_namespace: str,
                 trainer_image: str, trainjob_staging_uri: str):
    """PIM pretrain on the detection / continuation / generation curriculum.

    Args:
        curriculum: "detection,continuation,generation" weights ("0,1,1": the no-detection ablation).
        pim: the model directory (PIM trained).
        num_nodes ... trainjob_staging_uri: multi-node training (module docstring).
    """
    from pathlib import Path

    from interactavatar.orchestration import train_stage
    from interactavatar.train.curriculum import Curriculum
    from interactavatar.train.engine import EngineConfig
    from interactavatar.train.stages import StageSpec
    from interactavatar.trainjob import TrainJobSettings

    nodes = TrainJobSettings(num_nodes=num_nodes, gpus_per_node=gpus_per_node, runtime=trainer_runtime,
                             namespace=trainer_namespace, image=trainer_image, staging_uri=trainjob_staging_uri)
    train_stage(StageSpec(stage="pim", preset=preset, data=Path(dataset.path), out=Path(pim.path), steps=steps,
                          seed=seed, vae=Path(vae.path), curriculum=Curriculum.parse(curriculum),
                          engine=EngineConfig(micro_batch_size=batch_size, learning_rate=learning_rate),
                          data_rev=dataset.metadata.get("data_rev"), parent_run_id=parent_run_id or None),
                nodes, output_uri=pim.uri)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def audio_pretrain(dataset: Input[Dataset], vae: Input[Model], preset: str, steps: int, batch_size: int,
                   learning_rate: float, seed: int, parent_run_id: str, audio: Output[Model], num_nodes: int,
                   gpus_per_node: int, trainer_runtime: str, trainer_namespace: str, trainer_image: str,
                   trainjob_staging_uri: str):
    """AIM audio pretrain: audio and text conditioning, no motion.

    Args:
        audio: the model directory (AIM trained with audio).
        num_nodes ... trainjob_staging_uri: multi-node training (module docstring).
    """
    from pathlib import Path

    from interactavatar.orchestration import train_stage
    from interactavatar.train.engine import EngineConfig
    from interactavatar.train.stages import StageSpec
    from interactavatar.trainjob import TrainJobSettings

    nodes = TrainJobSettings(num_nodes=num_nodes, gpus_per_node=gpus_per_node, runtime=trainer_runtime,
                             namespace=trainer_namespace, image=trainer_image, staging_uri=trainjob_staging_uri)
    train_stage(StageSpec(stage="audio", preset=preset, data=Path(dataset.path), out=Path(audio.path), steps=steps,
                          seed=seed, vae=Path(vae.path),
                          engine=EngineConfig(micro_batch_size=batch_size, learning_rate=learning_rate),
                          data_rev=dataset.metadata.get("data_rev"), parent_run_id=parent_run_id or None),
                nodes, output_uri=audio.uri)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def joint_finetune(dataset: Input[Dataset], vae: Input[Model], pim: Input[Model], audio: Input[Model],
                   preset: str, steps: int, batch_size: int, learning_rate: float, seed: int, injection: str,
                   parent_run_id: str, model: Output[Model], num_nodes: int, gpus_per_node: int,
                   trainer_runtime: str, trainer_namespace: str, trainer_image: str, trainjob_staging_uri: str):
    """Joint fine-tune of both streams and the M2V aligner.

    Args:
        injection: how PIM reaches AIM: residual (the paper), last or add (ablations).
        model: the final model directory.
        num_nodes ... trainjob_staging_uri: multi-node training (module docstring).
    """
    from pathlib import Path

    from interactavatar.orchestration import train_stage
    from interactavatar.train.engine import EngineConfig
    from interactavatar.train.stages import StageSpec
    from interactavatar.trainjob import TrainJobSettings

    nodes = TrainJobSettings(num_nodes=num_nodes, gpus_per_node=gpus_per_node, runtime=trainer_runtime,
                             namespace=trainer_namespace, image=trainer_image, staging_uri=trainjob_staging_uri)
    train_stage(StageSpec(stage="joint", preset=preset, data=Path(dataset.path), out=Path(model.path), steps=steps,
                          seed=seed, vae=Path(vae.path), pim=Path(pim.path), audio=Path(audio.path),
                          injection=injection,
                          engine=EngineConfig(micro_batch_size=batch_size, learning_rate=learning_rate),
                          data_rev=dataset.metadata.get("data_rev"), parent_run_id=parent_run_id or None),
                nodes, output_uri=model.uri)
    model.metadata["data_rev"] = dataset.metadata.get("data_rev", "")
