"""The gate's decisions, as properties over many simulated evaluations: noise seldom promotes, a
clear gain always does, a clear loss never does, and a guard vetoes only a loss it shows."""

import numpy as np
import pytest

from interactavatar.registry.gate import Gate, GateMetric

PRIMARY_ONLY = Gate(GateMetric("grounding_iou", "max", 0.0))


def _evaluations(shift: float, clips: int, runs: int, seed: int = 3, guard_shift: float = 0.0):
    """(new, champion) per-clip scores: the champion's clips vary, the challenger scores each clip
    as the champion did plus `shift` plus noise (and its sync plus `guard_shift`)."""
    rng = np.random.default_rng(seed)
    for _ in range(runs):
        base_iou, base_sync = rng.uniform(0.2, 0.8, clips), rng.uniform(0.2, 0.6, clips)
        new_iou = base_iou + shift + rng.normal(0, 0.1, clips)
        new_sync = base_sync + guard_shift + rng.normal(0, 0.1, clips)
        yield ([{"grounding_iou": i, "sync_confidence": s} for i, s in zip(new_iou, new_sync, strict=True)],
               [{"grounding_iou": i, "sync_confidence": s} for i, s in zip(base_iou, base_sync, strict=True)])


@pytest.mark.parametrize("clips", [8, 16])
def test_a_challenger_equal_to_the_champion_plus_noise_is_seldom_promoted(clips):
    decisions = [PRIMARY_ONLY.decide(new, base).promote for new, base in _evaluations(0.0, clips, runs=400)]
    # At most 1 - level; the interval is two-sided, so about half that is expected.
    assert np.mean(decisions) <= 1 - PRIMARY_ONLY.level


def test_a_clearly_better_challenger_is_promoted_and_a_clearly_worse_one_never():
    # 0.25 is 7 standard errors of the mean difference at 8 clips.
    assert all(PRIMARY_ONLY.decide(new, base).promote for new, base in _evaluations(0.25, 8, runs=100))
    assert not any(PRIMARY_ONLY.decide(new, base).promote for new, base in _evaluations(-0.25, 8, runs=100))
    # A margin asks for more than a gain: 0.25 on average does not clear 0.3.
    strict = Gate(GateMetric("grounding_iou", "max", 0.3))
    assert not any(strict.decide(new, base).promote for new, base in _evaluations(0.25, 8, runs=100))


def test_a_guard_vetoes_a_loss_it_shows_and_nothing_else():
    gate = Gate.parse("grounding_iou:max:0,sync_confidence:max:0.05")
    vetoed = [gate.decide(new, base) for new, base in _evaluations(0.2, 16, runs=50, guard_shift=-0.3)]
    assert not any(d.promote for d in vetoed)
    assert all("guard sync_confidence lost" in d.reason for d in vetoed)
    # Noise on the guard: the clearly better challenger still goes through (a guard asks for evidence of a loss).
    kept = [gate.decide(new, base).promote for new, base in _evaluations(0.2, 16, runs=100, guard_shift=0.0)]
    assert np.mean(kept) >= 0.95
    # Against the untrained floor only the primary counts.
    new, base = next(_evaluations(0.2, 16, runs=1, guard_shift=-0.3))
    assert gate.decide(new, base, against_floor=True).promote


def test_a_min_metric_gains_by_going_down_and_unmeasured_metrics_refuse():
    gate = Gate.parse("wrong_object:min:0")
    better = [{"wrong_object": 0.0}] * 6
    worse = [{"wrong_object": 1.0}] * 6
    assert gate.decide(better, worse).promote and not gate.decide(worse, better).promote
    one_clip = gate.decide([{"wrong_object": 0.0}, {"wrong_object": None}], [{"wrong_object": 1.0}] * 2)
    assert not one_clip.promote and "fewer than 2 clips" in one_clip.reason


def test_gate_specs_are_checked():
    gate = Gate.parse("grounding_iou:max:0.01, sync_confidence:max:0.05", level=0.9)
    assert gate.primary == GateMetric("grounding_iou", "max", 0.01) and gate.level == 0.9
    assert Gate.parse(gate.spec()) == Gate(gate.primary, gate.guards)
    for bad, message in [("grounding_iou:max", "expected NAME:max"), ("iou:up:0", "direction 'up'"),
                         ("", "no metrics"), ("a:max:0,a:min:0", "appears twice"), ("a:max:0,b:max:-1", "at least 0"),
                         ("a:max:nan", "not a finite")]:
        with pytest.raises(ValueError, match=message):
            Gate.parse(bad)
