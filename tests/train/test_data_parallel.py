"""Data parallelism for real: `torchrun --nproc-per-node 2` on the CPU (gloo), gradient accumulation
and activation checkpointing under DeepSpeed (tiny preset, PIM stage).

Each sample's noise is keyed by its global index, so a global batch trains to the same weights
however it is split (up to float summation order): two processes with micro-batch 2 and one process
with 2 x 2 accumulated must both match one process with micro-batch 4, and differ from one process
with micro-batch 2, which trains on half the samples.
"""

import os
import subprocess
import sys
import time

import mlflow
import psutil
import pytest
import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
from helpers.train import largest_difference, spec
from safetensors.torch import load_file

from interactavatar.cli import build_parser
from interactavatar.train.commands import spec_from_args
from interactavatar.train.engine import create_engine
from interactavatar.train.sampling import BatchLayout
from interactavatar.train.stages import _micro_batch, _prepare, run_stage

STEPS = 6
# Float summation order differs between the splits; after STEPS Adam steps that leaves ~1e-6.
SAME_TRAINING = 1e-5
# Training on half the samples moves the weights ~1e-2 away.
DIFFERENT_TRAINING = 1e-3


def train_pim(data, vae, out, batch_size: int, grad_accum: int = 1) -> list[str]:
    return ["train", "pim", "--preset", "tiny", "--data", str(data), "--vae", str(vae), "--out", str(out),
            "--steps", str(STEPS), "--checkpoint-every", "3", "--lr", "2e-3",
            "--batch-size", str(batch_size), "--grad-accum", str(grad_accum)]


def torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "interactavatar.cli", *args]


def weights(out) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(out / "model.safetensors")).items() if k.startswith("pim.")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, train_dataset, trained):
    """The same PIM training, one process in this one, as the CLI would configure it."""
    root = tmp_path_factory.mktemp("data-parallel")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    try:
        for name, batch_size, grad_accum in (("micro4", 4, 1), ("micro2", 2, 1), ("micro2_accum2", 2, 2)):
            args = train_pim(train_dataset, trained / "vae", root / name, batch_size, grad_accum)
            run_stage(spec_from_args(build_parser().parse_args(args)))
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    return root


@pytest.fixture(scope="module")
def two_processes(runs, train_dataset, trained):
    """Two processes with micro-batch 2 under torchrun, tracked in the same store: as a pipeline
    training task in a pod with two GPUs launches them (`train_stage`, task_gpus 2)."""
    from interactavatar.cluster.trainjob import TrainJobSettings
    from interactavatar.pipeline.steps import train_stage

    out = runs / "two_processes"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{runs}/mlflow.db"
    try:
        stage = spec_from_args(build_parser().parse_args(train_pim(train_dataset, trained / "vae", out, 2)))
        assert train_stage(stage, TrainJobSettings(num_nodes=1), output_uri="", task_gpus=2) == out
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    return out


def test_gradient_accumulation_trains_on_the_whole_global_batch(runs):
    micro4 = weights(runs / "micro4")
    assert largest_difference(weights(runs / "micro2_accum2"), micro4) < SAME_TRAINING
    assert largest_difference(weights(runs / "micro2"), micro4) > DIFFERENT_TRAINING


@pytest.mark.integration
def test_two_processes_train_on_different_halves_of_the_global_batch(runs, two_processes):
    two = weights(two_processes)
    assert largest_difference(two, weights(runs / "micro4")) < SAME_TRAINING
    # had both ranks drawn the same clips and noise, this would be the one-process micro-batch 2
    assert largest_difference(two, weights(runs / "micro2")) > DIFFERENT_TRAINING


@pytest.mark.integration
def test_ranks_end_in_sync_and_only_rank_0_tracks(runs, two_processes):
    # Rank 0 wrote the model directory from its replica; under ZeRO-2 each rank updated its own half
    # of the master weights, so rank 1's half reached rank 0.
    merged = get_fp32_state_dict_from_zero_checkpoint(str(two_processes / "checkpoints"), tag=f"step-{STEPS:08d}")
    written = load_file(str(two_processes / "model.safetensors"))
    assert [k for k in merged if not torch.equal(merged[k], written[k])] == []
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs}/mlflow.db")
    experiment = client.get_experiment_by_name("interactavatar").experiment_id
    tracked = [r for r in client.search_runs(experiment) if r.data.params["stage.out"] == str(two_processes)]
    assert len(tracked) == 1
    assert tracked[0].data.params["processes"] == "2" and tracked[0].data.params["global_batch"] == "4"
    assert tracked[0].data.metrics["samples_per_s"] > 0


@pytest.mark.integration
def test_killed_torchrun_resumes_to_bit_identical_weights(two_processes, train_dataset, trained, tmp_path, tracking):
    """SIGKILL torchrun and both workers after the first checkpoint (a lost node), rerun, compare."""
    out = tmp_path / "killed"
    command = torchrun(train_pim(train_dataset, trained / "vae", out, 2))
    launcher = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = out / "checkpoints" / "LATEST"
    deadline = time.time() + 300
    while not pointer.exists() and time.time() < deadline and launcher.poll() is None:
        time.sleep(0.05)
    # torchrun starts its workers in sessions of their own: each must be killed by its id.
    for process in [launcher, *launcher.children(recursive=True)]:
        process.kill()
    launcher.wait()
    assert pointer.exists() and not (out / "model.safetensors").exists()
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    assert largest_difference(weights(out), weights(two_processes)) == 0


@pytest.mark.parametrize("stage", ["pim", "joint"])
def test_gradient_checkpointing_keeps_fewer_activations_for_backward(stage, train_dataset, trained, tmp_path):
    """--gradient-checkpointing reaches the blocks in training (the joint stage's model comes
    loaded, in eval mode), where they keep only their inputs and recompute the rest in backward."""
    inputs = {"vae": trained / "vae"} | ({"pim": trained / "pim", "audio": trained / "audio"} if stage == "joint" else {})
    stage_spec = spec(stage, train_dataset, tmp_path, gradient_checkpointing=True, **inputs)
    objective, bundle, cache = _prepare(stage_spec, torch.device("cpu"))
    engine = create_engine(objective, stage_spec.engine)

    def bytes_saved_for_backward() -> int:
        saved = []

        def keep(tensor):
            saved.append(tensor.numel() * tensor.element_size())
            return tensor

        batch, randomness = _micro_batch(stage_spec, cache, BatchLayout(2), 0, 0, torch.device("cpu"))
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            loss = engine(batch, randomness)["loss"]
        engine.backward(loss)
        engine.step()
        return sum(saved)

    checkpointed = bytes_saved_for_backward()
    bundle.model.set_gradient_checkpointing(False)
    assert checkpointed < 0.5 * bytes_saved_for_backward()
