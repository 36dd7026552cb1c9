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


def test_without_warmup_the_first_step_trains_at_the_full_rate():
    # DeepSpeed's WarmupLR would run the first two steps at lr 0 (it reads 0 before it starts).
    engine = create_engine(Square(), EngineConfig(micro_batch_size=1, learning_rate=0.1))
    engine.backward(engine(torch.ones(3))["loss"])
    engine.step()
    # AdamW's first step moves every weight by the learning rate (the sign of its gradient).
    torch.testing.assert_close(engine.module.weight.detach(), torch.full((3,), 0.9))
    assert engine.get_lr() == [0.1]
    shutdown()
    warm = create_engine(Square(), EngineConfig(micro_batch_size=1, learning_rate=0.1, warmup_steps=4))
    warm.backward(warm(torch.ones(3))["loss"])
    warm.step()
    assert warm.module.weight.detach().gt(0.9).all()  # still ramping up
    shutdown()
