"""Atomic, durable writes: a reader, or a crash, never sees half a file or half a folder under its
final name, and a write that returned survives a power loss.

Every write in the package goes through these: a temporary sibling is written in full, flushed to
the disk (fsync), then renamed over the target in one step (a rename within a folder is atomic on
POSIX file systems), and the folder is flushed too, so that the rename itself is on the disk. Without
the flushes a crash soon after a rename can leave the new name pointing at an empty or partial file
(ext4 and XFS write data and metadata back separately): a checkpoint pointer naming a tag whose
files never reached the disk.

The temporary files and folders are created with modes 0666 and 0777, which the kernel narrows by
the process's umask, as `open` and `mkdir` do: a written file ends up as readable as any other file
the user makes (tempfile's mkstemp and mkdtemp would leave 0600 and 0700, a model folder the serving
group cannot read).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
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


def _new_sibling(parent: Path, prefix: str, suffix: str, create) -> Path:
    """A fresh name in `parent` made by `create(path)` (which fails if the name exists): a random
    name, drawn again on a collision, like tempfile's but with the umask's modes."""
    while True:
        candidate = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is flushed and replaces `path` in one
    step. On an exception the temporary file is removed and `path` keeps its previous contents."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling(path.parent, f".{path.name}.", ".tmp" + path.suffix, _create_file)
    created = tmp.stat()
    try:
        yield tmp
        written = tmp.stat()
        if written.st_ino != created.st_ino:
            # The writer replaced our file with its own (safetensors' save_file makes it 0600): the
            # umask's mode, which our file got, is given back.
            os.chmod(tmp, stat.S_IMODE(created.st_mode))
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
    staging = _new_sibling(target.parent, f".{target.name}.tmp-", "", lambda folder: folder.mkdir(0o777))
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
