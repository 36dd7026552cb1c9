"""What a resumed stage must share with the attempt that wrote its checkpoint.

A resume continues the checkpoint's weights, optimizer state and RNG with the settings it is given
now; with another seed, learning rate, batch or preset the result is neither the old run nor the new
one, and nothing said so. Every tag records the settings that trained it (its MANIFEST.json), and a
resume with different ones is refused, naming each difference.

Compared: every StageSpec setting (the engine's one by one) except those in NOT_COMPARED, and the
number of processes (it sets the global batch, and ZeRO's optimizer shards). A setting added to
StageSpec later is compared unless it is added there.

`steps` may change: the stages have no decay schedule, and every batch and noise draw is keyed by
its step (`sampling`), so a run extended from 4 to 8 steps ends bit-identical to one of 8 steps. It
may not go below the checkpoint's step (the model would hold more steps than asked for).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from interactavatar.train.stages import StageSpec

NOT_COMPARED = {
    "steps": "may grow (checked apart: not below the checkpoint's step)",
    "checkpoint_every": "when the state is saved, not what it is",
    "log_every": "what is logged",
    "track": "what is logged",
    "parent_run_id": "what is logged",
    "data_rev": "a label of the data, logged",
    "data_repo": "where the data came from, logged",
    "data_path": "where the data came from, logged",
    "out": "the folder holding the checkpoint",
    "data": "a path, which differs between pods and retries; the data's hash is logged in MLflow",
    "vae": "a path, as for data",
    "pim": "a path, as for data",
    "audio": "a path, as for data",
    "gradient_checkpointing": "trades memory for time; the same gradients",
}


class ResumeMismatch(ValueError):
    """A resume with settings other than its checkpoint's (a ValueError: the CLI reports it in one line)."""


def resume_settings(spec: StageSpec, processes: int) -> dict:
    """The settings that shape a stage's result, as JSON values ("engine.<name>" for the engine's)."""
    values = {f"engine.{f.name}": getattr(spec.engine, f.name) for f in dataclasses.fields(spec.engine)}
    values |= {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
               if f.name != "engine" and f.name not in NOT_COMPARED}
    values["processes"] = processes
    # Through JSON, as the record stores them: tuples become lists, dataclasses dicts.
    return json.loads(json.dumps(values, default=lambda value: dataclasses.asdict(value)
                                 if dataclasses.is_dataclass(value) else str(value)))


def check_resume(recorded: dict, current: dict, source: str) -> None:
    """Raise ResumeMismatch listing each setting in which `current` differs from `recorded` (read
    from `source`, the checkpoint's record)."""
    differences = [f"{name}: {recorded.get(name, '(not recorded)')!r} in the checkpoint, {current.get(name, '(none)')!r} now"
                   for name in sorted(recorded.keys() | current.keys()) if recorded.get(name) != current.get(name)]
    if differences:
        raise ResumeMismatch(f"{source}: this --out holds a checkpoint trained with other settings, and resuming "
                             f"would mix both runs; rerun with the checkpoint's settings, or train into a new --out. "
                             f"Differences: {'; '.join(differences)}")
