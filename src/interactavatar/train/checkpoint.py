"""Resumable checkpoints on top of DeepSpeed's: a stage killed at any moment resumes from the last
complete one.

DeepSpeed writes a tag folder (module, optimizer, scheduler and our client state); only after it
is complete does the `LATEST` pointer move to it, in one atomic rename. A half-written tag is never
pointed at, and is removed by the next save.

Each process writes its own part of a tag (ZeRO partitions the optimizer state per rank), so on
several nodes each node's disk holds its own ranks' files: every node's first process publishes
and prunes its own disk. When INTERACTAVATAR_CHECKPOINT_MIRROR names an s3:// prefix (a TrainJob
node sets it), every tag is also mirrored there (`checkpoint_mirror`), for nodes that come back
on fresh disks. It is an environment variable rather than a training argument because it says
where the process runs, not how the stage trains.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from interactavatar.io.files import write_bytes_atomic

POINTER = "LATEST"
TAG_PREFIX = "step-"
MIRROR_ENV = "INTERACTAVATAR_CHECKPOINT_MIRROR"


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
        self.mirror = None
        if mirror_uri := os.environ.get(MIRROR_ENV):
            # Imported here: training without a mirror needs no S3 settings.
            from interactavatar.train.checkpoint_mirror import CheckpointMirror

            self.mirror = CheckpointMirror(mirror_uri, keep)

    def latest_tag(self) -> str | None:
        pointer = self.directory / POINTER
        if not pointer.is_file():
            return None
        tag = pointer.read_text().strip()
        if not (self.directory / tag).is_dir():
            raise FileNotFoundError(f"{pointer}: points at {tag!r}, which is missing")
        return tag

    def save(self, engine, step: int, client_state: dict) -> str:
        """Every process calls this (DeepSpeed's save is a collective)."""
        tag = f"{TAG_PREFIX}{step:08d}"
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {**client_state, "step": step, "rng": rng_state()}
        engine.save_checkpoint(str(self.directory), tag=tag, client_state=state, save_latest=False)
        # Past this barrier every rank's files of the tag are on its node's disk.
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        if engine.local_rank == 0:
            write_bytes_atomic(self.directory / POINTER, tag.encode())
            self._prune(tag)
        if self.mirror is not None:
            self._mirror(engine, tag)
        return tag

    def _mirror(self, engine, tag: str) -> None:
        """Each node uploads its disk's files of `tag`; rank 0 publishes the tag on S3 once all
        nodes' uploads are there."""
        uploaded = self.mirror.upload_tag(self.directory, tag) if engine.local_rank == 0 else {}
        # Gathering the uploads is also the barrier: no node is still uploading past it.
        if torch.distributed.is_initialized():
            reports = [{}] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(reports, uploaded)
        else:
            reports = [uploaded]
        if engine.global_rank == 0:
            self.mirror.publish(tag, {name: size for report in reports for name, size in report.items()})

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
        tags = [p.name for p in self.directory.glob(f"{TAG_PREFIX}*") if p.is_dir()]
        for tag in stale_tags(tags, current, self.keep):
            shutil.rmtree(self.directory / tag, ignore_errors=True)


def stale_tags(tags, current: str, keep: int) -> list[str]:
    """The tags to remove once `current` is published: all newer ones (what a killed attempt left
    half-written) and all but the `keep` newest up to `current`."""
    tags = sorted(tags)
    return [t for t in tags if t > current] + [t for t in tags if t <= current][:-keep]
