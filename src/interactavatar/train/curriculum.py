"""PIM pretraining curriculum: scene parsing as generation, continuation and full generation.

- detection: the single motion frame of the reference image (latent frame 0), from the image and
  the text: the model must find the object and the person in the scene;
- continuation: the whole motion with its first latent frame given clean (timestep 0): the
  release's frame layout, where that frame is the reference's pose;
- generation: the whole motion from the image and the text alone.
Every task appends the reference image at motion size as the back frame.
One flow-matching loss serves all three; a step trains one task, drawn by the configured weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TASKS = ("detection", "continuation", "generation")


@dataclass
class Curriculum:
    detection: float = 1.0
    continuation: float = 1.0
    generation: float = 1.0

    def __post_init__(self) -> None:
        weights = self.weights()
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"curriculum: weights {weights} must be non-negative with a positive sum")

    def weights(self) -> tuple[float, float, float]:
        return (self.detection, self.continuation, self.generation)

    def task(self, generator: torch.Generator) -> str:
        index = torch.multinomial(torch.tensor(self.weights(), dtype=torch.float64), 1, generator=generator).item()
        return TASKS[index]

    @classmethod
    def parse(cls, text: str) -> Curriculum:
        """"1,1,2" -> detection 1, continuation 1, generation 2 (detection 0: the ablation)."""
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError as err:
            raise ValueError(f"--curriculum {text!r}: expected three numbers like 1,1,1") from err
        if len(values) != 3:
            raise ValueError(f"--curriculum {text!r}: expected three weights (detection,continuation,generation)")
        return cls(*values)


def task_latents(task: str, motion: torch.Tensor) -> tuple[torch.Tensor, int]:
    """motion: [B, Cz, F, h, w] -> (the latents to denoise, how many leading frames stay clean)."""
    if task == "detection":
        return motion[:, :, :1], 0
    if task == "continuation":
        return motion, 1
    if task == "generation":
        return motion, 0
    raise ValueError(f"curriculum: unknown task {task!r}")
