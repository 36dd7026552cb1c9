"""Sharded weights written one tensor at a time: what safetensors reads back, byte for byte."""

import json

import pytest
import torch
from safetensors.torch import load_file

from interactavatar.model.weights import (
    WEIGHTS_INDEX,
    LazyTensor,
    read_model_weights,
    write_safetensors_streaming,
    write_sharded_weights,
)


def _lazy(name, tensor, reads):
    def read():
        reads.append(name)
        return tensor
    return LazyTensor(name, tensor.dtype, tuple(tensor.shape), read)


def test_streamed_file_is_what_safetensors_reads_back(tmp_path):
    tensors = {"a": torch.randn(3, 5).to(torch.bfloat16), "b": torch.arange(7, dtype=torch.int64),
               "c": torch.randn(2, 1, 3)}
    reads = []
    write_safetensors_streaming(tmp_path / "x.safetensors", [_lazy(k, v, reads) for k, v in tensors.items()],
                                metadata={"format": "pt"})
    loaded = load_file(str(tmp_path / "x.safetensors"))
    assert reads == ["a", "b", "c"]
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)


def test_shards_respect_the_size_limit_and_the_index_finds_every_tensor(tmp_path):
    tensors = {f"layer.{i}.weight": torch.randn(64, 64).to(torch.bfloat16) for i in range(5)}  # 8 KiB each
    paths = write_sharded_weights(tmp_path, [_lazy(k, v, []) for k, v in tensors.items()], max_shard_bytes=20_000)
    assert [p.name for p in paths] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / WEIGHTS_INDEX).read_text())
    assert index["metadata"]["total_size"] == 5 * 64 * 64 * 2
    assert set(index["weight_map"]) == set(tensors)
    weights = read_model_weights(tmp_path)
    assert all(torch.equal(weights[k], v) for k, v in tensors.items())


def test_a_tensor_read_as_other_than_announced_is_refused(tmp_path):
    liar = LazyTensor("w", torch.float32, (2, 2), lambda: torch.zeros(3))
    with pytest.raises(ValueError, match="w read as torch.float32 \\[3\\], expected torch.float32 \\[2, 2\\]"):
        write_safetensors_streaming(tmp_path / "bad.safetensors", [liar])
    assert not list(tmp_path.iterdir()), "a failed write leaves nothing behind"


def test_missing_weights_and_shards_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model weights not found"):
        read_model_weights(tmp_path)
    (tmp_path / WEIGHTS_INDEX).write_text(json.dumps({"weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="model-00001-of-00001.safetensors: shard listed"):
        read_model_weights(tmp_path)
