"""Training-stage specs of a few steps for the training tests, and weight comparisons."""

import torch

from interactavatar.train.engine import EngineConfig
from interactavatar.train.stages import StageSpec

ENGINE = EngineConfig(micro_batch_size=2, learning_rate=2e-3, warmup_steps=2)


def spec(stage, data, out, **kwargs) -> StageSpec:
    """A tiny-preset stage of a few steps, checkpointing every 2 and logging every step (engine:
    ENGINE unless given)."""
    return StageSpec(stage=stage, preset="tiny", data=data, out=out, steps=kwargs.pop("steps", 4),
                     checkpoint_every=2, log_every=1, engine=kwargs.pop("engine", ENGINE), **kwargs)


def largest_difference(weights: dict[str, torch.Tensor], others: dict[str, torch.Tensor]) -> float:
    assert weights.keys() == others.keys()
    return max((weights[k] - others[k]).abs().max().item() for k in weights)
