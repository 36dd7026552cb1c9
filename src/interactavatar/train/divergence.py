"""A stage whose loss or gradients stop being finite stops there, naming the stage and the step.

Nothing else notices: under ZeRO 1 and 2 DeepSpeed skips an optimizer step whose gradient norm is
not finite and carries on (skipped_steps), without ZeRO the weights turn to NaN, and either way the
stage went on to checkpoint and write a model that had stopped learning or was broken. The check
runs after every optimizer step, before that step's state can be checkpointed or written, so the
last checkpoint (from finite steps) stays the resume point.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


class NonFiniteLoss(FloatingPointError):
    """A stage's loss or gradient norm is NaN or infinite."""


def stop_if_not_finite(stage: str, engine, loss: torch.Tensor, step: int, resume_point: Callable[[], str]) -> None:
    """Raise NonFiniteLoss if this step's loss (this process's, summed over its micro-batches) or
    its gradient norm is not finite on any process. A collective: every process stops at the same
    step. resume_point() says what a rerun resumes from, for the message."""
    norm = engine.get_global_grad_norm()  # None without ZeRO: no norm is computed
    norm = None if norm is None else float(norm)
    flags = torch.stack([~torch.isfinite(loss.detach()).all(),
                         torch.tensor(norm is not None and not math.isfinite(norm), device=loss.device)]).float()
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(flags)
    loss_bad, norm_bad = (flag > 0 for flag in flags.tolist())
    if not (loss_bad or norm_bad):
        return
    what = " and ".join(name for name, bad in (("the loss", loss_bad), ("the gradient norm", norm_bad)) if bad)
    verb = "are" if loss_bad and norm_bad else "is"
    raise NonFiniteLoss(f"train {stage}: {what} {verb} not finite at step {step} (this process: loss "
                        f"{loss.detach().float().sum().item()}, gradient norm {norm}); stopped before this step's state "
                        f"was checkpointed or written. A rerun resumes from {resume_point()}; a learning rate too high "
                        "or bad data are the usual causes (another --lr needs a new --out)")
