"""Which clips each rank trains on, and every random draw of a step, as pure functions of the seed.

An optimizer step trains on a global batch of micro_batch_size x ranks x accumulation samples. Its
samples have global indices, and each rank takes a disjoint slice of them; an index maps to a clip
through an epoch-wise permutation and to its noise through its own generator. So a run is a
function of the seed and the global batch size alone, however the batch is split into processes,
micro-batches and accumulation steps (up to float summation order), and a resumed run repeats
exactly the draws of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# Kinds of generator, mixed into their seeds so that a step's and a sample's streams never coincide.
_STEP, _SAMPLE = 0, 1


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's global batch is split.

    Step s trains on the global sample indices [s * global_batch, (s + 1) * global_batch). Its
    micro-batch m is the m-th run of micro_batch_size * ranks of them, of which rank r takes the
    r-th slice of micro_batch_size: on one process with micro_batch_size * ranks, micro-batch m is
    exactly the union of the ranks' slices.
    """

    micro_batch_size: int
    accumulation: int = 1
    ranks: int = 1
    rank: int = 0

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.ranks * self.accumulation

    def samples(self, step: int, micro: int) -> range:
        """The global sample indices of this rank's micro-batch `micro` of optimizer step `step`."""
        first = step * self.global_batch + (micro * self.ranks + self.rank) * self.micro_batch_size
        return range(first, first + self.micro_batch_size)


def clip_indices(samples: range, count: int, seed: int) -> torch.Tensor:
    """Global sample indices -> clip indices in [0, count).

    Epoch e (samples [e * count, (e + 1) * count)) visits every clip once, in a permutation seeded
    by (seed, e) that every rank computes alike: disjoint sample slices are disjoint clips within an
    epoch.
    """
    orders: dict[int, torch.Tensor] = {}
    clips = []
    for sample in samples:
        epoch, offset = divmod(sample, count)
        if epoch not in orders:
            orders[epoch] = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        clips.append(orders[epoch][offset].item())
    return torch.tensor(clips)


def keyed_generator(seed: int, kind: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, kind, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass
class StepRandomness:
    """The random draws of one micro-batch.

    `step`: for what shapes the whole batch (the curriculum task, pose-driven or not). Keyed by
    (seed, optimizer step), it draws the same on every rank and micro-batch of the step.
    `samples`: one generator per sample, keyed by (seed, global sample index), for its timestep,
    noise and condition dropout: a sample draws the same wherever it lands.
    """

    step: torch.Generator
    samples: list[torch.Generator]

    @classmethod
    def keyed(cls, seed: int, step: int, samples: range) -> StepRandomness:
        return cls(keyed_generator(seed, _STEP, step), [keyed_generator(seed, _SAMPLE, s) for s in samples])

    def each(self, draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        """draw(generator) -> [1, ...] for every sample, concatenated: [B, ...]."""
        return torch.cat([draw(generator) for generator in self.samples])

    def uniform(self) -> torch.Tensor:
        """[B] in [0, 1)."""
        return self.each(lambda generator: torch.rand(1, generator=generator))

    def normal_like(self, tensor: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped, placed and typed like `tensor` [B, ...]."""
        noise = self.each(lambda generator: torch.randn(1, *tensor.shape[1:], generator=generator))
        return noise.to(tensor.device, tensor.dtype)
