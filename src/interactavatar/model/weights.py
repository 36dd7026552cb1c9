"""A module's folder: config YAML + safetensors (one file, or shards and their index), each file
replaced atomically; shards are written one tensor at a time."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
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
    save_config(directory, cfg)


def save_config(directory: str | Path, cfg) -> None:
    """Write the dataclass `cfg` as `config.yaml` in `directory`."""
    write_text_atomic(Path(directory) / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def load_dataclass(cls, path: str | Path):
    """Build dataclass `cls` from a YAML file, naming the file and field on bad input."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config not found")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields")
    return build_dataclass(cls, data, str(path))


# A model directory holds its weights as one file, or (imported or large models) as shards listed
# by an index, under the names transformers and diffusers use.
WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
                       torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def load_checkpoint(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A checkpoint file's state dict: safetensors, or a .pth loaded as tensors only (no pickled code
    runs) and memory-mapped. Errors name the file and `what` it should have held."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises several kinds for a file that is not a tensor archive
        raise ValueError(f"{path}: not a {what} ({err})") from err
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: {what} holds a {type(loaded).__name__}, not a state dict")
    return loaded


def read_model_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """A model directory's weights, from `model.safetensors` or the shards its index lists."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if (directory / WEIGHTS).is_file():
        return load_file(str(directory / WEIGHTS))
    index = directory / WEIGHTS_INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{directory / WEIGHTS}: model weights not found (nor {WEIGHTS_INDEX})")
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index}: no weight_map")
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if not (directory / shard).is_file():
            raise FileNotFoundError(f"{directory / shard}: shard listed in {WEIGHTS_INDEX} not found")
        weights.update(load_file(str(directory / shard)))
    return weights


@dataclass(frozen=True)
class LazyTensor:
    """A tensor to write without holding it: its name, dtype and shape, and how to read it."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    read: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


def write_safetensors_streaming(path: str | Path, tensors: list[LazyTensor], metadata: dict[str, str] | None = None
                                ) -> None:
    """A safetensors file written one tensor at a time (the format's header lists every tensor's
    dtype, shape and byte range, all known before any data is read), so memory holds one tensor,
    not the file. safetensors' own writers take the whole dict at once."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for tensor in tensors:
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: {tensor.name} has dtype {tensor.dtype}, which safetensors cannot store")
        header[tensor.name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                               "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        for tensor in tensors:
            value = tensor.read()
            if value.dtype != tensor.dtype or tuple(value.shape) != tensor.shape:
                raise ValueError(f"{path}: {tensor.name} read as {value.dtype} {list(value.shape)}, "
                                 f"expected {tensor.dtype} {list(tensor.shape)}")
            handle.write(value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            del value


def write_sharded_weights(directory: str | Path, tensors: list[LazyTensor], max_shard_bytes: int) -> list[Path]:
    """`tensors` as `model-0000i-of-0000n.safetensors` shards of at most `max_shard_bytes` each (a
    larger tensor gets a shard of its own) and their index, written one tensor at a time."""
    directory = Path(directory)
    shards: list[list[LazyTensor]] = [[]]
    for tensor in tensors:
        if shards[-1] and sum(t.nbytes for t in shards[-1]) + tensor.nbytes > max_shard_bytes:
            shards.append([])
        shards[-1].append(tensor)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        write_safetensors_streaming(directory / name, shard, metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)},
             "weight_map": {t.name: name for name, shard in zip(names, shards, strict=True) for t in shard}}
    write_text_atomic(directory / WEIGHTS_INDEX, json.dumps(index, indent=1) + "\n")
    return [directory / name for name in names]
