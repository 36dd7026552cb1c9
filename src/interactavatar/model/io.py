"""Atomic writes of model folders: config YAML + safetensors, never half-written."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `target` in one rename.

    On an exception the temporary folder is removed and `target` keeps its previous contents.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    if target.exists():
        previous = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, previous)
    os.replace(staging, target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def save_config_and_weights(directory: str | Path, cfg, state_dict: dict[str, torch.Tensor]) -> None:
    """Write `model.safetensors`, then `config.yaml`, into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
    fd, temporary = tempfile.mkstemp(prefix=".model.tmp-", suffix=".safetensors", dir=directory)
    os.close(fd)
    save_file(tensors, temporary)
    os.replace(temporary, directory / "model.safetensors")
    atomic_write_bytes(directory / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False).encode())


def load_dataclass(cls, path: str | Path):
    """Build dataclass `cls` from a YAML file, naming the file and field on bad input."""
    from interactavatar.config import build_dataclass

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config not found")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields")
    return build_dataclass(cls, data, str(path))
