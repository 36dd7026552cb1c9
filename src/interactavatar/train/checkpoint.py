"""Resumable checkpoints on top of DeepSpeed's: a stage killed at any moment resumes from the last
complete one.

DeepSpeed writes a tag folder (module, optimizer, scheduler and our client state); only after it
is complete does the `LATEST` pointer move to it, in one atomic rename. A half-written tag is never
pointed at, and is removed by the next save.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from interactavatar.model.io import atomic_write_bytes

POINTER = "LATEST"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory)
        self.keep = keep

    def latest_tag(self) -> str | None:
        pointer = self.directory / POINTER
        if not pointer.is_file():
            return None
        tag = pointer.read_text().strip()
        if not (self.directory / tag).is_dir():
            raise FileNotFoundError(f"{pointer}: points at {tag!r}, which is missing")
        return tag

    def save(self, engine, step: int, client_state: dict) -> str:
        tag = f"step-{step:08d}"
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {**client_state, "step": step, "rng": rng_state()}
        engine.save_checkpoint(str(self.directory), tag=tag, client_state=state, save_latest=False)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        if engine.global_rank == 0:
            atomic_write_bytes(self.directory / POINTER, tag.encode())
            self._prune(tag)
        return tag

    def load(self, engine) -> dict | None:
        """Restore module, optimizer, scheduler and RNG; returns the client state, or None if
        there is no checkpoint yet."""
        tag = self.latest_tag()
        if tag is None:
            return None
        path, state = engine.load_checkpoint(str(self.directory), tag=tag)
        if path is None:
            raise RuntimeError(f"{self.directory / tag}: DeepSpeed could not load this checkpoint")
        restore_rng_state(state["rng"])
        return state

    def _prune(self, current: str) -> None:
        tags = sorted(p.name for p in self.directory.glob("step-*") if p.is_dir())
        stale = [t for t in tags if t > current] + [t for t in tags if t <= current][: -self.keep]
        for tag in stale:
            shutil.rmtree(self.directory / tag, ignore_errors=True)
