"""Atomic, durable writes: a reader, or a crash, never sees half a file or half a folder under its
final name, and a write that returned survives a power loss.

Every write in the package goes through these: a temporary sibling is written in full, flushed to
the disk (fsync), then renamed over the target in one step (a rename within a folder is atomic on
POSIX file systems), and the folder is flushed too, so that the rename itself is on the disk. Without
the flushes a crash soon after a rename can leave the new name pointing at an empty or partial file
(ext4 and XFS write data and metadata back separately): a checkpoint pointer naming a tag whose
files never reached the disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_file(path: str | Path) -> None:
    """Flush `path`'s data to the disk (whoever wrote it: fsync flushes the file, not a handle)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: str | Path) -> None:
    """Flush a folder's entries (the names created, renamed or removed in it) to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        # A few file systems (some FUSE and network mounts) cannot sync a folder; their renames are
        # as durable as they get.
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is flushed and replaces `path` in one
    step. On an exception the temporary file is removed and `path` keeps its previous contents."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_directory(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder under `folder`, and `folder` itself."""
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_directory(root)


@contextlib.contextmanager
def atomic_directory(target: str | Path, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it is flushed and replaces `target` in one
    rename.

    On an exception the temporary folder is removed and `target` keeps its previous contents.
    keep_existing: a `target` already there when the folder is done wins and ours is discarded (a
    cache of immutable content filled by several processes at once: both copies are the same, and
    another process may be reading the first).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        _fsync_tree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if keep_existing:
        try:
            os.rename(staging, target)  # fails when another process published the folder first
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)
        fsync_directory(target.parent)
        return
    previous = None
    if target.exists():
        previous = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, previous)
    os.replace(staging, target)
    fsync_directory(target.parent)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
