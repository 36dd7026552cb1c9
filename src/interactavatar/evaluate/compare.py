"""Paired comparison of two models scored on the same clips with the same seeds.

A model evaluated alone gives one mean per metric; two such means from different runs differ by the
clips' noise as much as by the models. Scored in one run (`evaluate --baseline`), each clip gives a
difference, and the mean difference gets a bootstrap confidence interval over clips: resample the
clips with replacement, recompute the mean difference, take the percentiles. The seed is fixed, so
the same scores give the same interval.

The plain percentile interval is too narrow on few clips (its spread is the sample's, divided by n
rather than n - 1, and it uses normal rather than t quantiles): on 8 clips of pure noise its lower
bound lay above zero in 7% of 400 simulations, not the 2.5% a 95% interval promises. So the
percentiles are those of the expanded percentile interval (Hesterberg, "What teachers should know
about the bootstrap", 2015): the tail probability chosen so that, for normal data, the interval is
as wide as the t interval. On the same simulations its lower bound lay above zero in 2.5%.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_LEVEL = 0.95
RESAMPLES = 4000


def expanded_tail(level: float, n: int) -> float:
    """The lower percentile (in [0, 1]) an expanded `level` interval over `n` values takes."""
    from scipy import stats  # seconds to import: only when comparing

    t = stats.t.ppf(1 - (1 - level) / 2, n - 1)
    return float(stats.norm.sf(math.sqrt(n / (n - 1)) * t))


def paired_bootstrap(new: list[float | None], base: list[float | None], level: float = DEFAULT_LEVEL,
                     resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float | int | None]:
    """The mean of new - base over the clips where both are defined, and its two-sided `level`
    expanded percentile-bootstrap interval: {"mean", "low", "high", "clips", "level"} (mean None
    without clips; bounds None with fewer than 2, where no interval exists)."""
    if len(new) != len(base):
        raise ValueError(f"paired comparison: {len(new)} new scores against {len(base)} baseline scores")
    if not 0 < level < 1:
        raise ValueError(f"paired comparison: level {level} must lie strictly between 0 and 1")
    pairs = [(a, b) for a, b in zip(new, base, strict=True) if a is not None and b is not None]
    result = {"mean": None, "low": None, "high": None, "clips": len(pairs), "level": level}
    if not pairs:
        return result
    differences = np.array([a - b for a, b in pairs], dtype=np.float64)
    result["mean"] = float(differences.mean())
    if len(pairs) < 2:
        return result
    picks = np.random.default_rng(seed).integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    tail = expanded_tail(level, len(differences))
    low, high = np.quantile(means, [tail, 1 - tail])
    return {**result, "low": float(low), "high": float(high)}


def compare(new: list[dict], base: list[dict], metrics: list[str], level: float = DEFAULT_LEVEL,
            seed: int = 0) -> dict[str, dict]:
    """Per-clip scores of two systems (same clips, same order) -> each metric's paired_bootstrap."""
    return {name: paired_bootstrap([clip.get(name) for clip in new], [clip.get(name) for clip in base], level,
                                   seed=seed)
            for name in metrics}
