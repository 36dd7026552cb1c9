"""Paired bootstrap intervals: exact on identical scores, honest under noise, decisive on real gaps."""

import numpy as np
import pytest

from interactavatar.evaluate.compare import compare, paired_bootstrap


def test_identical_scores_give_a_zero_interval_and_missing_clips_are_skipped():
    assert paired_bootstrap([0.3, 0.5, None], [0.3, 0.5, 0.9]) == {"mean": 0.0, "low": 0.0, "high": 0.0,
                                                                    "clips": 2, "level": 0.95}
    assert paired_bootstrap([None], [0.1])["mean"] is None
    # One clip has a difference but no interval.
    assert paired_bootstrap([0.4], [0.1]) == pytest.approx({"mean": 0.3, "low": None, "high": None, "clips": 1,
                                                            "level": 0.95})
    with pytest.raises(ValueError, match="3 new scores against 2 baseline scores"):
        paired_bootstrap([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="level 1.0 must lie strictly between 0 and 1"):
        paired_bootstrap([1.0], [1.0], level=1.0)


def _simulate(shift: float, runs: int = 300, clips: int = 16) -> list[dict]:
    """Evaluations where the new model scores each clip as the baseline did, plus `shift`, plus noise."""
    rng = np.random.default_rng(7)
    results = []
    for run in range(runs):
        base = rng.normal(0.5, 0.2, clips)
        new = base + shift + rng.normal(0, 0.1, clips)
        results.append(paired_bootstrap(list(new), list(base), resamples=1000, seed=run))
    return results


@pytest.mark.parametrize("clips", [8, 16])
def test_noise_alone_seldom_looks_like_a_gain(clips):
    # A challenger equal to the baseline plus noise: its interval lies wholly above 0 in about
    # (1 - level) / 2 of the evaluations, and covers 0 in about `level` of them, even on few clips
    # (the plain percentile interval's lower bound lay above 0 in 7% at 8 clips).
    results = _simulate(0.0, clips=clips)
    assert np.mean([r["low"] > 0 for r in results]) <= 0.04
    assert np.mean([r["low"] <= 0 <= r["high"] for r in results]) >= 0.92


def test_a_clear_gain_is_seen_and_a_clear_loss_never_looks_like_one():
    assert all(r["low"] > 0 for r in _simulate(0.15))
    assert not any(r["low"] > 0 for r in _simulate(-0.15))


def test_compare_pairs_each_metric_by_clip():
    new = [{"iou": 0.6, "sync": None}, {"iou": 0.8, "sync": 0.2}]
    base = [{"iou": 0.5, "sync": 0.1}, {"iou": 0.6, "sync": 0.3}]
    result = compare(new, base, ["iou", "sync"])
    assert result["iou"]["mean"] == pytest.approx(0.15) and result["iou"]["clips"] == 2
    assert result["sync"]["mean"] == pytest.approx(-0.1) and result["sync"]["clips"] == 1
