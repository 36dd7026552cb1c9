"""The registry's gate: which metrics a new version must beat the champion on, in which direction,
by how much."""

from __future__ import annotations

from dataclasses import dataclass, field

from interactavatar.config import DEFAULT_GATE


def _default_metrics() -> dict[str, str]:
    return dict(pair.split(":") for pair in DEFAULT_GATE.split(","))


@dataclass
class Gate:
    """Gate metrics with their direction ("max" or "min") and the absolute margin to beat."""

    metrics: dict[str, str] = field(default_factory=_default_metrics)
    margin: float = 0.0

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.metrics.items() if v not in ("max", "min")}
        if bad or not self.metrics:
            raise ValueError(f"gate: metrics need a direction 'max' or 'min', got {bad or self.metrics}")

    def beats(self, new: dict[str, float], old: dict[str, float]) -> bool:
        """Whether `new` may replace `old`: it has every gate metric, loses none of those `old` has
        by more than the margin allows, and gains in one of them, or has one that `old` lacks."""
        if any(name not in new for name in self.metrics):
            return False
        gains = [new[name] - old[name] if direction == "max" else old[name] - new[name]
                 for name, direction in self.metrics.items() if name in old]
        newly_measured = len(gains) < len(self.metrics)
        return all(g >= self.margin for g in gains) and (newly_measured or any(g > 0 for g in gains))

    @classmethod
    def parse(cls, metrics: str, margin: float) -> Gate:
        """"grounding_iou:max,sync_confidence:max" -> Gate."""
        pairs = [item.split(":") for item in metrics.split(",") if item]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"--gate {metrics!r}: expected NAME:max|min pairs separated by commas")
        return cls(dict(pairs), margin)
