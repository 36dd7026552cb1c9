"""The registry's gate: may a new version replace the champion?

The new version and its baseline (the champion, or for the first version the untrained floor) are
scored in one evaluation: the same clips, seeds and steps (`interactavatar evaluate --baseline`).
Each gate metric's per-clip differences get a paired bootstrap interval (`evaluate.compare`), and:

- the primary metric's interval of the gain must lie wholly above its margin: the new version must
  show that it is better, so noise alone promotes at most (1 - level) / 2 of the time;
- no guard metric's interval may lie wholly below minus its tolerance: a guard vetoes a loss the
  evaluation shows, not one it cannot rule out, since a guard that had to prove "no loss" on a
  metric not yet learned (lip sync at the demo budget) would block every version;
- against the floor only the primary applies: an untrained model is not a level to hold on the
  guards (its random video flickers in the mouth window and scores sync 0.55, above every demo
  model), only one to beat on what the model is for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from interactavatar.config import DEFAULT_GATE
from interactavatar.evaluate.compare import DEFAULT_LEVEL, compare

DIRECTIONS = ("max", "min")


@dataclass(frozen=True)
class GateMetric:
    """A per-clip metric (evaluate/score.py), whether higher or lower is better, and its threshold:
    the primary's margin to clear, or a guard's tolerated loss (absolute, in the metric's units)."""

    name: str
    direction: str
    threshold: float

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"gate: {self.name}: direction {self.direction!r}, expected one of {DIRECTIONS}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"gate: {self.name}: threshold {self.threshold} is not a finite number")

    def gain(self, interval: dict) -> tuple[float, float]:
        """The interval of new - baseline, turned so that higher is better."""
        low, high = interval["low"], interval["high"]
        return (low, high) if self.direction == "max" else (-high, -low)

    def spec(self) -> str:
        return f"{self.name}:{self.direction}:{self.threshold:g}"


@dataclass(frozen=True)
class Decision:
    """promote: whether the new version may take the title; reason: why, in a sentence naming the
    metric and interval that decided; intervals: each gate metric's paired_bootstrap."""

    promote: bool
    reason: str
    intervals: dict[str, dict]


@dataclass(frozen=True)
class Gate:
    """The primary metric, the guards, the intervals' level, and whether the primary's margin may
    be negative (`allow_worse`: a deliberate admin choice, e.g. a smoke test's two-step model;
    otherwise refused, since a negative margin promotes a version shown to be worse)."""

    primary: GateMetric
    guards: tuple[GateMetric, ...] = ()
    level: float = DEFAULT_LEVEL
    allow_worse: bool = False

    def __post_init__(self) -> None:
        if not 0.5 <= self.level < 1:
            raise ValueError(f"gate: level {self.level} must lie in [0.5, 1): a lower one promotes noise more often "
                             f"than not")
        if self.primary.threshold < 0 and not self.allow_worse:
            raise ValueError(f"gate: the primary {self.primary.name}'s margin {self.primary.threshold:g} is negative, "
                             f"which promotes a version worse than the champion; only an admin policy with "
                             f"--allow-worse may")
        names = [metric.name for metric in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"gate: a metric appears twice in {names}")
        if any(guard.threshold < 0 for guard in self.guards):
            raise ValueError(f"gate: a guard's tolerance must be at least 0: {self.spec()}")

    @property
    def metrics(self) -> tuple[GateMetric, ...]:
        return (self.primary, *self.guards)

    def decide(self, new: list[dict], baseline: list[dict], against_floor: bool = False) -> Decision:
        """Per-clip scores of the new version and its baseline (same clips, same order) -> the
        decision. `against_floor`: the baseline is the untrained floor (no champion yet)."""
        intervals = compare(new, baseline, [metric.name for metric in self.metrics], self.level)
        checked = (self.primary,) if against_floor else self.metrics
        unmeasured = [m.name for m in checked if intervals[m.name]["low"] is None]
        if unmeasured:
            counts = ", ".join(f"{name}: {intervals[name]['clips']}" for name in unmeasured)
            return Decision(False, f"no interval for {unmeasured}: fewer than 2 clips scored by both ({counts})",
                            intervals)
        low, high = self.primary.gain(intervals[self.primary.name])
        shown = f"{self.primary.name}'s gain, {self.level:g} interval [{low:.3f}, {high:.3f}]"
        if not low > self.primary.threshold:
            return Decision(False, f"{shown}, does not lie above the margin {self.primary.threshold:g}", intervals)
        for guard in checked[1:]:
            g_low, g_high = guard.gain(intervals[guard.name])
            if g_high < -guard.threshold:
                return Decision(False, f"guard {guard.name} lost: its gain's interval [{g_low:.3f}, {g_high:.3f}] "
                                       f"lies below its tolerance -{guard.threshold:g}", intervals)
        guards = "guards not applied against the floor" if against_floor else "no guard lost beyond its tolerance"
        return Decision(True, f"{shown}, lies above the margin {self.primary.threshold:g}; {guards}", intervals)

    def spec(self) -> str:
        return ",".join(metric.spec() for metric in self.metrics)

    @classmethod
    def parse(cls, spec: str = DEFAULT_GATE, level: float = DEFAULT_LEVEL, allow_worse: bool = False) -> Gate:
        """"PRIMARY:max|min:MARGIN[,GUARD:max|min:TOLERANCE...]" -> Gate."""
        metrics = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            fields = item.split(":")
            try:
                name, direction, threshold = fields
                metrics.append(GateMetric(name, direction, float(threshold)))
            except ValueError as err:
                raise ValueError(f"--gate {spec!r}: {item!r}: expected NAME:max|min:THRESHOLD ({err})") from err
        if not metrics:
            raise ValueError(f"--gate {spec!r}: no metrics; give at least the primary, NAME:max|min:MARGIN")
        return cls(metrics[0], tuple(metrics[1:]), level, allow_worse)
