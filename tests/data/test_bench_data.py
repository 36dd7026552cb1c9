"""The data benchmark runs and reports every figure (no timing is asserted: a shared CPU is noise)."""

from benchmarks.bench_data import run


def test_bench_data_reports_rates():
    result = run(num_clips=2, repeats=1)
    for key in ("synth_clips", "validate_clips", "dataset_items_first_epoch", "dataset_items_motion_cached"):
        assert set(result[key]) == {"wall_per_s", "cpu_per_s"} and result[key]["wall_per_s"] > 0
    assert result["preset"] == "demo" and result["clips"] == 2
