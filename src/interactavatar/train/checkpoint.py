"""Resumable checkpoints on top of DeepSpeed's: a stage killed at any moment resumes from the last
complete one, and never from a damaged or foreign one.

DeepSpeed writes a tag folder (module, optimizer, scheduler and our client state); once it is
complete its files are hashed and flushed to the disk and recorded in `<tag>/MANIFEST.json`
(`integrity`), and only then does the `LATEST` pointer move to it, in one atomic, flushed rename. A
half-written tag is never pointed at, and is removed by the next save. A full disk stops the save
with an error that says so, and the pointer stays on the previous tag.

A restore checks the pointer's tag against its record before any of its files is unpickled (and
then unpickles tensors only: `checkpoint_io`); a tag that fails falls back to the previous one,
with a warning naming what failed. The record also holds the settings the tag was trained with: a
resume with others is refused (`resume`).

Each process writes its own part of a tag (ZeRO partitions the optimizer state per rank), so on
several nodes each node's disk holds its own ranks' files: every node's first process records,
publishes, verifies and prunes its own disk, and the nodes agree on the newest tag good on all of
them. When INTERACTAVATAR_CHECKPOINT_MIRROR names an s3:// prefix (a TrainJob node sets it), every
tag is also mirrored there (`checkpoint_mirror`), for nodes that come back on fresh disks. It is an
environment variable rather than a training argument because it says where the process runs, not
how the stage trains.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from interactavatar.io.files import write_bytes_atomic
from interactavatar.train.integrity import MANIFEST, CorruptCheckpoint, TagRecord, record_tag, verify_tag
from interactavatar.train.resume import check_resume

POINTER = "LATEST"
TAG_PREFIX = "step-"
TAG = re.compile(rf"{TAG_PREFIX}\d{{8}}")
MIRROR_ENV = "INTERACTAVATAR_CHECKPOINT_MIRROR"


class CheckpointFallback(UserWarning):
    """The newest checkpoint failed its integrity check; an older one is resumed."""


def rng_state() -> dict:
    # numpy's state as a tensor: checkpoints are loaded with weights_only=True, which rebuilds no
    # numpy arrays.
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _gather(value) -> list:
    """Every process's `value` (a collective when there are several)."""
    if not torch.distributed.is_initialized():
        return [value]
    values = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values


class CheckpointManager:
    """settings: what the stage's result depends on (`resume.resume_settings`); recorded with every
    tag, and a resume must match them."""

    def __init__(self, directory: str | Path, settings: dict, keep: int = 2):
        self.directory = Path(directory)
        self.settings = settings
        self.keep = keep
        self.mirror = None
        if mirror_uri := os.environ.get(MIRROR_ENV):
            # Imported here: training without a mirror needs no S3 settings.
            from interactavatar.train.checkpoint_mirror import CheckpointMirror

            self.mirror = CheckpointMirror(mirror_uri, keep)

    def latest_tag(self) -> str | None:
        """The tag LATEST points at (None: no checkpoint yet), whether or not it is intact."""
        pointer = self.directory / POINTER
        if not pointer.is_file():
            return None
        tag = pointer.read_text().strip()
        if not TAG.fullmatch(tag):
            raise CorruptCheckpoint(f"{pointer}: holds {tag[:40]!r}, not a tag name ({TAG_PREFIX}NNNNNNNN)")
        return tag

    def resume_point(self) -> str:
        """Where a rerun would resume, in words: the pointer's tag, or step 0."""
        tag = self.latest_tag()
        return str(self.directory / tag) if tag else "step 0 (no checkpoint yet)"

    def save(self, engine, step: int, client_state: dict) -> str:
        """Every process calls this (DeepSpeed's save is a collective)."""
        tag = f"{TAG_PREFIX}{step:08d}"
        folder = self.directory / tag
        main = engine.local_rank == 0
        self.directory.mkdir(parents=True, exist_ok=True)
        if main:
            # What an attempt that never finished this tag left, or the damaged tag a resume fell
            # back from: the record must list this save's files alone.
            shutil.rmtree(folder, ignore_errors=True)
        _barrier()
        state = {**client_state, "step": step, "rng": rng_state()}
        try:
            engine.save_checkpoint(str(self.directory), tag=tag, client_state=state, save_latest=False)
            # Past this barrier every rank's files of the tag are on its node's disk.
            _barrier()
            if main:
                record_tag(folder, tag, step, self.settings)
                write_bytes_atomic(self.directory / POINTER, tag.encode())
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            raise self._disk_full(folder, err, main) from err
        if main:
            self._prune(tag)
        if self.mirror is not None:
            self._mirror(engine, tag)
        return tag

    def _disk_full(self, folder: Path, err: OSError, main: bool) -> OSError:
        """The error for a save cut short by a full disk, once its half-written tag is removed."""
        if main:
            shutil.rmtree(folder, ignore_errors=True)
        free = shutil.disk_usage(self.directory).free
        return OSError(errno.ENOSPC, f"checkpoint {folder}: the disk is full (no space left writing "
                                     f"{err.filename or 'a file of the tag'}; {free} bytes free now): the tag was not "
                                     f"saved; a rerun resumes from {self.resume_point()} once there is space")

    def _mirror(self, engine, tag: str) -> None:
        """Each node uploads its disk's files of `tag`; rank 0 publishes the tag on S3 once all
        nodes' uploads are there."""
        uploaded = self.mirror.upload_tag(self.directory, tag) if engine.local_rank == 0 else None
        # Gathering the uploads is also the barrier: no node is still uploading past it.
        records = [record for record in _gather(uploaded) if record is not None]
        if engine.global_rank == 0:
            self.mirror.publish(TagRecord.merge(records))

    def load(self, engine) -> dict | None:
        """Restore module, optimizer, scheduler and RNG from the newest intact tag; returns the
        client state, or None if there is no checkpoint yet. Raises CorruptCheckpoint when no tag
        is intact, ResumeMismatch when the tag was trained with other settings."""
        tag = self._intact_tag(engine)
        if tag is None:
            return None
        folder = self.directory / tag
        # This node's first process verified the record and the files it lists.
        record = TagRecord.read(folder)
        check_resume(record.settings, self.settings, str(folder / MANIFEST))
        engine.checkpoint_engine.verified = {(folder / name).resolve() for name in record.files}
        path, state = engine.load_checkpoint(str(self.directory), tag=tag)
        if path is None:
            raise RuntimeError(f"{folder}: DeepSpeed could not load this checkpoint")
        restore_rng_state(state["rng"])
        return state

    def _candidates(self) -> list[str]:
        """The pointer's tag, then the older tags on this disk, newest first. Tags newer than the
        pointer were never completed."""
        latest = self.latest_tag()
        if latest is None:
            return []
        older = [p.name for p in self.directory.glob(f"{TAG_PREFIX}*") if p.is_dir() and TAG.fullmatch(p.name)]
        return [latest, *sorted((tag for tag in older if tag < latest), reverse=True)]

    def _intact_tag(self, engine) -> str | None:
        """The newest tag that every node's first process finds intact on its disk (a collective)."""
        main = engine.local_rank == 0
        candidates = sorted({tag for tags in _gather(self._candidates() if main else []) for tag in tags},
                            reverse=True)
        failures: list[str] = []
        for tag in candidates:
            found = [problem for problems in _gather(verify_tag(self.directory / tag)[1] if main else [])
                     for problem in problems]
            if not found:
                if failures and engine.global_rank == 0:
                    warnings.warn(f"{self.directory}: resuming from {tag}: the newer tags failed their integrity "
                                  f"check: {'; '.join(failures)}", CheckpointFallback, stacklevel=2)
                return tag
            failures += found
        if failures:
            raise CorruptCheckpoint(f"{self.directory}: no checkpoint passes its integrity check ({'; '.join(failures)}); "
                                    f"restore the files, or remove {self.directory} to train from step 0")
        return None

    def _prune(self, current: str) -> None:
        tags = [p.name for p in self.directory.glob(f"{TAG_PREFIX}*") if p.is_dir()]
        for tag in stale_tags(tags, current, self.keep):
            shutil.rmtree(self.directory / tag, ignore_errors=True)


def stale_tags(tags, current: str, keep: int) -> list[str]:
    """The tags to remove once `current` is published: all newer ones (what a killed attempt left
    half-written) and all but the `keep` newest up to `current`."""
    tags = sorted(tags)
    return [t for t in tags if t > current] + [t for t in tags if t <= current][:-keep]
