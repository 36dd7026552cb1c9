"""DeepSpeed for every stage: ZeRO (2 by default), bf16 on GPU and fp32 on CPU, gradient clipping,
accumulation. One process on a CPU; `torchrun --nproc-per-node N` on a GPU node. Its checkpoints are
read and written by `checkpoint_io` (weights_only loads of verified files).
"""

from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class EngineConfig:
    micro_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    zero_stage: int = 2
    gradient_clipping: float = 1.5  # the release's value

    def deepspeed_config(self, use_bf16: bool) -> dict:
        # No scheduler without warmup: DeepSpeed's WarmupLR reads 0 before its first step and 0 at
        # iteration 0, so even `warmup_num_steps: 1` trains the first two steps at lr 0.
        warmup = {"scheduler": {
            "type": "WarmupLR",
            "params": {"warmup_min_lr": 0.0, "warmup_max_lr": self.learning_rate,
                       "warmup_num_steps": self.warmup_steps, "warmup_type": "linear"},
        }} if self.warmup_steps else {}
        return {
            "train_micro_batch_size_per_gpu": self.micro_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "gradient_clipping": self.gradient_clipping,
            "optimizer": {
                "type": "AdamW",
                # torch's AdamW: DeepSpeed's fused Adam would JIT-compile a CUDA/C++ op first.
                "params": {"lr": self.learning_rate, "betas": list(self.betas), "eps": 1e-8,
                           "weight_decay": self.weight_decay, "torch_adam": True},
            },
            **warmup,
            "zero_optimization": {"stage": self.zero_stage},
            "bf16": {"enabled": use_bf16},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed() -> None:
    """Bring up torch.distributed for DeepSpeed, without a launcher when there is none."""
    import deepspeed

    if torch.distributed.is_initialized():
        return
    # A launcher (torchrun) sets these; alone, this process is rank 0 of 1. The rendezvous address
    # we set is removed again once it is used, so that processes started later (a pipeline's tasks)
    # pick their own port instead of inheriting this one; DeepSpeed reads the ranks later on.
    defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(free_port())}
    added = [key for key in defaults if key not in os.environ]
    os.environ.update({key: defaults[key] for key in added})
    if not torch.cuda.is_available():
        # DeepSpeed JIT-compiles a shared-memory all-reduce for CPU ranks (40+ s of g++) even for
        # one process; gloo does the job. The module must be imported by path: the package
        # attribute `deepspeed.comm.torch` is the torch module itself.
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    try:
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    finally:
        for key in set(added) & {"MASTER_ADDR", "MASTER_PORT"}:
            os.environ.pop(key, None)


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def create_engine(module: nn.Module, cfg: EngineConfig):
    """Wrap the trainable module (frozen parameters are left out of the optimizer)."""
    import deepspeed

    from interactavatar.train.checkpoint_io import VerifiedCheckpointEngine

    init_distributed()
    use_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # DeepSpeed leaves the module's mode alone, and a model loaded from a directory comes in eval
    # mode, where the blocks skip activation checkpointing.
    module.to(device()).train()
    trainable = [p for p in module.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=module, model_parameters=trainable, config=cfg.deepspeed_config(use_bf16)
    )
    engine.checkpoint_engine = VerifiedCheckpointEngine(engine._config)
    return engine


def shutdown() -> None:
    """Barrier, then tear down: without it gloo ranks sometimes abort at exit after training.

    DeepSpeed keeps a clone of the world group; it is forgotten too, so that a later engine in this
    process (a second stage, a test) starts on the new group instead of the destroyed one."""
    if torch.distributed.is_initialized():
        from deepspeed.utils import groups

        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        groups._WORLD_GROUP = None
