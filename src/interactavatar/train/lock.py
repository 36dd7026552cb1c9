"""One trainer per --out: an exclusive lock, so that a second trainer started on the same folder is
refused instead of both writing its checkpoints and model (both used to exit 0, one model silently
overwritten by the other).

The lock is flock(2) on `<out>/trainer.lock`, taken by each node's first process for the whole
stage (the other processes of a torchrun job are part of the same trainer). The kernel releases it
when its holder exits, however it exits, so a killed trainer leaves no stale lock. The file holds
the holder's pid, host and start time, for the refusal's message; it is written in place, not by an
atomic rename, which would put a new, unlocked file under the name. A clean exit removes it, so that
it does not travel with the model directory; a trainer that took the lock on a file removed since
takes it again on the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE = "trainer.lock"


class OutLocked(ValueError):
    """--out is held by another trainer (a ValueError: the CLI reports it in one line)."""


def _holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        return f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "a trainer that has not recorded itself yet"


@contextlib.contextmanager
def exclusive_out(out: str | Path) -> Iterator[None]:
    """Hold `out` for this trainer; raise OutLocked naming the holder when another one does."""
    path = Path(out) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutLocked(f"{path}: --out {out} is in use by another trainer ({holder}); two trainers would "
                            "overwrite each other's checkpoints and model: wait for it, or stop it") from None
        # The previous holder may have removed the file between our open and our lock.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        # Removed while still held: nobody can lock this file in between and lose it to the removal.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
