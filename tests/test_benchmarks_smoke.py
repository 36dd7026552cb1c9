"""The benchmarks still run (at minimal sizes) and still compare like with like.

No timing is asserted: figures on a shared CPU are noise at these sizes; only structure is. That the
DiT benchmark's reference computes what our stream computes is tests/model/test_diffusers_parity.py.
"""

import math

import pytest

pytest.importorskip("diffusers")

from benchmarks import bench_dit, bench_dual  # noqa: E402
from benchmarks.run import merge, render  # noqa: E402


def _assert_ratios(row: dict, keys: list[str]) -> None:
    for key in keys:
        median = row[key]["median"]
        assert math.isfinite(median) and median > 0, (key, row[key])


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
