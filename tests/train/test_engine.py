"""The DeepSpeed engine on the CPU, as one process runs it."""

import torch
from torch import nn

from interactavatar.train.engine import EngineConfig, create_engine, shutdown


class Square(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return {"loss": ((self.weight * x) ** 2).sum()}


def test_an_engine_starts_again_after_a_shutdown():
    """A second stage in one process (or a test after a stage) gets a working engine: the world
    group DeepSpeed cloned before the shutdown is not reused."""
    for _ in range(2):
        engine = create_engine(Square(), EngineConfig(micro_batch_size=1, learning_rate=0.1))
        for _ in range(3):
            engine.backward(engine(torch.ones(3))["loss"])
            engine.step()
        assert engine.global_steps == 3 and engine.module.weight.detach().lt(1).all()
        shutdown()
