"""The benchmarks still run (at minimal sizes) and still compare like with like.

No timing is asserted: figures on a shared CPU are noise at these sizes; only structure is.
"""

import math

import pytest
import torch

pytest.importorskip("diffusers")

from benchmarks import bench_dit, bench_dual  # noqa: E402
from benchmarks.run import merge, render  # noqa: E402
from benchmarks.wan_reference import build_wan, to_wan_state_dict  # noqa: E402
from interactavatar.config import StreamConfig  # noqa: E402
from interactavatar.model.stream import DiTStream  # noqa: E402


def _assert_ratios(row: dict, keys: list[str]) -> None:
    for key in keys:
        median = row[key]["median"]
        assert math.isfinite(median) and median > 0, (key, row[key])


def test_our_stream_computes_what_diffusers_wan_computes():
    """With our weights loaded into diffusers and no reference frame (so the RoPE positions agree),
    both networks give the same velocity: the DiT benchmark compares one function twice."""
    torch.manual_seed(0)
    cfg = StreamConfig(dim=64, num_layers=2, num_heads=2, ffn_dim=128, freq_dim=32)
    ours = DiTStream(cfg, latent_channels=16, text_dim=48).eval()
    torch.nn.init.normal_(ours.head.proj.weight, std=0.1)
    theirs = build_wan(cfg, 16, 48).eval()
    theirs.load_state_dict(to_wan_state_dict(ours), strict=True)
    latents, text, t = torch.randn(2, 16, 3, 8, 8), torch.randn(2, 5, 48), torch.tensor([300.0, 700.0])
    with torch.no_grad():
        expected = theirs(latents, t, text, return_dict=False)[0]
        actual = ours(latents, latents[:, :, :0], t[:, None].expand(2, 3), text)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_dit_benchmark_runs():
    result = bench_dit.run(quick=True)
    (row,) = result["rows"]
    assert row["finite"]
    ours, theirs = row["params ours / diffusers"].split(" / ")
    assert ours == theirs
    _assert_ratios(row, ["ratio", "ratio CPU time", "ratio vs scalar-t", "ratio vs scalar-t, CPU time"])


def test_dual_benchmark_runs_and_renders(tmp_path):
    result = bench_dual.run(quick=True)
    (row,) = result["rows"]
    _assert_ratios(row, ["ratio", "ratio CPU time"])
    section = render("dual", result, "python -m benchmarks.run --only dual", 1.0)
    out = merge(merge("", {"dual": section}), {"dual": section})
    assert out.count("<!-- bench:dual -->") == 1 and "| quick |" in out
    assert "python -m benchmarks.run --only dual" in out


def test_training_benchmark_runs_both_loops():
    from benchmarks import bench_train

    result = bench_train.run(quick=True)
    row = result["rows"][0]
    _assert_ratios(row, ["ratio", "ratio CPU time"])
    assert row["samples/s DeepSpeed"] > 0 and row["peak RSS MB"] > 0
