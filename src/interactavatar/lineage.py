"""Where a model came from: the dataset's content hash and its data revision."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def dataset_hash(root: str | Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order: equal datasets, equal hash."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def data_revision(root: str | Path) -> str:
    """The git revision of the repository holding the dataset's DVC pointer, or "unversioned"."""
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10)
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        return "unversioned"
    return result.stdout.strip()
