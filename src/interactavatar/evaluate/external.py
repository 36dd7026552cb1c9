"""Metrics that need pretrained weights (a real SyncNet, a hand detector, a VLM for VLM-QA).

None is bundled and nothing is downloaded: a metric plugs in when its weights are given by a local
path (`--syncnet PATH`, ...) and an installed package provides it as an entry point in the group
`interactavatar.evaluate.metrics`, named after the flag, whose object is a factory
`factory(path) -> ExternalMetric`. Its values join every clip's metrics, for the model, the floor
and the ceiling alike.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

import numpy as np

from interactavatar.evaluate.truth import ClipTruth

ENTRY_POINT_GROUP = "interactavatar.evaluate.metrics"
# Flag name -> what the weights are; the flags `interactavatar evaluate` offers.
EXTERNAL_METRICS = {
    "syncnet": "SyncNet lip-sync",
    "hand_detector": "hand keypoint detector",
    "vlm": "VLM-QA grounding",
}


class ExternalMetric(Protocol):
    """Scores one clip: video [T, H, W, 3] and motion [T, Hm, Wm, 3] uint8 with its ground truth ->
    named values (higher is better unless the name says otherwise)."""

    def __call__(self, video: np.ndarray, motion: np.ndarray, truth: ClipTruth) -> dict[str, float]: ...


def load_external_metric(kind: str, weights: str | Path) -> ExternalMetric:
    """The metric `kind` (a key of EXTERNAL_METRICS) built from local `weights`; a clear error when
    the path does not exist or no installed plugin provides `kind`."""
    if kind not in EXTERNAL_METRICS:
        raise ValueError(f"unknown external metric {kind!r}; choose one of {sorted(EXTERNAL_METRICS)}")
    flag = f"--{kind.replace('_', '-')}"
    weights = Path(weights)
    if not weights.exists():
        raise FileNotFoundError(f"{flag} {weights}: no such weights file or folder")
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        return entry.load()(weights)
    raise ValueError(
        f"{flag} {weights}: {EXTERNAL_METRICS[kind]} weights are not bundled with interactavatar and no "
        f"installed package provides the metric; install one with an entry point named {kind!r} in the group "
        f"{ENTRY_POINT_GROUP!r} (a factory(path) -> metric), or leave {flag} out"
    )
