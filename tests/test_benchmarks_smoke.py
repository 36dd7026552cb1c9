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


def test_vae_benchmark_trains_and_scores_both_kinds():
    from benchmarks import bench_vae

    result = bench_vae.run(quick=True)
    rows = {row["kind"]: row for row in result["rows"]}
    assert set(rows) == {"causal", "wan"}
    for row in rows.values():
        assert row["train_s"] > 0 and row["peak_rss_mb"] > 0 and row["params"] > 0
        assert 0 <= row["ssim"] <= 1 and row["psnr"] > 0  # scored by evaluation's metrics
    assert result["summary"]["latest"] > 0


def test_fuzz_benchmark_meets_every_bad_input_without_a_5xx_or_a_crash():
    """Every case as expected (refused, served or cancelled); memory is the benchmark's to judge."""
    from benchmarks import bench_fuzz

    result = bench_fuzz.run(quick=True)
    assert (result["responses_5xx"], result["crashes"], result["unanswered"]) == (0, 0, 0)
    unexpected = [row for row in result["rows"] if row["as expected"] != "yes"]
    assert not unexpected, unexpected
    assert result["refused_4xx"] > 0 and result["walked_away"] > 0 and result["served_2xx"] > 0
    assert result["summary"]["target"] == bench_fuzz.BUDGET_MB
    section = render("fuzz", result, "python -m benchmarks.run --only fuzz --quick", 1.0, quick=True)
    assert "| case |" in section and "peak MB above idle" in section


def test_lora_benchmark_trains_both_sides_from_one_registered_base():
    from benchmarks import bench_lora

    result = bench_lora.run(quick=True)
    full, lora = result["rows"]
    assert (full["weights_written"], lora["weights_written"]) == ("model.safetensors", "adapter.safetensors")
    assert 0 < lora["trainable_params"] < full["trainable_params"] == full["total_params"] < lora["total_params"]
    assert 0 < lora["weights_mb"] < full["weights_mb"] and full["peak_rss_mb"] > 0 and lora["wall_s"] > 0
    assert 0 < result["summary"]["latest"] < 1


def test_fault_benchmark_survives_its_quick_faults():
    """Every quick fault injected, survived, and nothing committed lost; the quick run is the
    in-process subset (the subprocess faults are the full run's)."""
    from benchmarks import bench_faults

    result = bench_faults.run(quick=True)
    quick = [number for number, fault in enumerate(bench_faults.FAULTS, 1) if fault.quick]
    assert [row["#"] for row in result["rows"]] == quick and 0 < len(quick) < len(bench_faults.FAULTS)
    failed = [row for row in result["rows"] if row["survived"] != "yes" or row["data lost"] != "none"]
    assert not failed, failed
    assert result["faults_survived"] == result["faults_injected"] == len(quick)
    assert result["summary"]["verdict"] == "met"
