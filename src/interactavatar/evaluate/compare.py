"""Paired comparison of two models scored on the same clips with the same seeds.

A model evaluated alone gives one mean per metric; two such means from different runs differ by the
clips' noise as much as by the models. Scored in one run (`evaluate --baseline`), each clip gives a
difference, and the mean difference gets a bootstrap confidence interval over clips: resample the
clips with replacement, recompute the mean difference, take the percentiles. The seed is fixed, so
the same scores give the same interval.
"""

from __future__ import annotations

import numpy as np

DEFAULT_LEVEL = 0.95
RESAMPLES = 4000


def paired_bootstrap(new: list[float | None], base: list[float | None], level: float = DEFAULT_LEVEL,
                     resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float | int | None]:
    """The mean of new - base over the clips where both are defined, and its two-sided `level`
    percentile-bootstrap interval: {"mean", "low", "high", "clips", "level"} (None without clips)."""
    if len(new) != len(base):
        raise ValueError(f"paired comparison: {len(new)} new scores against {len(base)} baseline scores")
    if not 0 < level < 1:
        raise ValueError(f"paired comparison: level {level} must lie strictly between 0 and 1")
    pairs = [(a, b) for a, b in zip(new, base, strict=True) if a is not None and b is not None]
    if not pairs:
        return {"mean": None, "low": None, "high": None, "clips": 0, "level": level}
    differences = np.array([a - b for a, b in pairs], dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"mean": float(differences.mean()), "low": float(low), "high": float(high), "clips": len(pairs),
            "level": level}


def compare(new: list[dict], base: list[dict], metrics: list[str], level: float = DEFAULT_LEVEL,
            seed: int = 0) -> dict[str, dict]:
    """Per-clip scores of two systems (same clips, same order) -> each metric's paired_bootstrap."""
    return {name: paired_bootstrap([clip.get(name) for clip in new], [clip.get(name) for clip in base], level,
                                   seed=seed)
            for name in metrics}
