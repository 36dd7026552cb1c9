"""A module's folder: config YAML + safetensors, each file replaced atomically."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from interactavatar.config import build_dataclass
from interactavatar.io.files import atomic_path, write_text_atomic


def save_config_and_weights(directory: str | Path, cfg, state_dict: dict[str, torch.Tensor]) -> None:
    """Write `model.safetensors`, then `config.yaml`, into `directory` (created if needed)."""
    directory = Path(directory)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_text_atomic(directory / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def load_dataclass(cls, path: str | Path):
    """Build dataclass `cls` from a YAML file, naming the file and field on bad input."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config not found")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields")
    return build_dataclass(cls, data, str(path))
