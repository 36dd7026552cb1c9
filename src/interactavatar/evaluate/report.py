"""The evaluation's HTML report: one self-contained file (plots and frames embedded as PNG).

It shows the metrics table (model / floor / ceiling), two plots (the bounded metrics side by side,
grounding IoU per clip) and, for a few clips, the reference image with the video and motion
frames of each system, the ground truth being the ceiling's row.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from interactavatar.io.files import write_text_atomic

# Metric -> (better direction, what it measures); the table's order.
METRIC_NOTES = {
    "grounding_iou": ("max", "IoU of the decoded object box with the true target box"),
    "wrong_object_rate": ("min", "clips whose box marks another object, or none, in most frames"),
    "box_detection_rate": ("max", "frames where a box is decoded at all"),
    "contact_accuracy": ("max", "frames of true hand-object contact where the acting hand touches the target"),
    "hand_wrong_object_rate": ("min", "contact frames where the drawn acting hand is nearer another object than the target"),
    "pck_body": ("max", "body keypoints within 10% of the short side"),
    "pck_hands": ("max", "hand keypoints within 10% of the short side"),
    "pck_body_0.05": ("max", "body keypoints within 5% of the short side"),
    "pck_hands_0.05": ("max", "hand keypoints within 5% of the short side"),
    "sync_confidence": ("max", "mouth motion vs loudness change: correlation peak minus median over offsets"),
    "sync_offset": ("0", "offset of the peak in frames (positive: the audio lags)"),
    "identity_similarity": ("max", "correlation with the reference image outside the moving region"),
    "ssim": ("max", "structural similarity with the true frames"),
    "psnr": ("max", "dB against the true frames (capped at 100)"),
    "temporal_stability": ("max", "1 - mean absolute frame-to-frame change (a frozen video scores 1)"),
    "generate_s": ("min", "seconds per clip to generate"),
}
BOUNDED = ("grounding_iou", "box_detection_rate", "contact_accuracy", "pck_body", "pck_hands", "identity_similarity",
           "ssim", "temporal_stability")
# What is scored: the model, an untrained floor, the ground truth through the model's VAE (the most
# a diffusion model on this VAE can reach), and the ground truth itself.
SYSTEMS = ("model", "baseline", "floor", "vae_ceiling", "ceiling")
SYSTEM_COLORS = {"model": "#1f77b4", "baseline": "#ff7f0e", "floor": "#bbbbbb", "vae_ceiling": "#98df8a",
                 "ceiling": "#2ca02c"}
FRAME_HEIGHT = 96  # px: tiny-preset frames are 32-64 px, too small to see


@dataclass
class Sample:
    """A clip shown in the report: reference [H, W, 3] uint8 and, per system, (video, motion)."""

    clip_id: str
    text: str
    reference: np.ndarray
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def write_report(path: str | Path, metrics: dict, samples: list[Sample]) -> None:
    systems = [s for s in SYSTEMS if s in metrics]
    config = metrics.get("config", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>InteractAvatar evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td.l,th.l{text-align:left}"
        "img{image-rendering:pixelated}.note{color:#666;font-size:90%}</style></head><body>",
        "<h1>InteractAvatar evaluation</h1>",
        f"<p>model <code>{_e(config.get('model_dir'))}</code> on <code>{_e(config.get('data_dir'))}</code> "
        f"split <b>{_e(config.get('split'))}</b>: {int(metrics['model'].get('num_clips', 0))} clips, preset "
        f"{_e(config.get('preset'))}, {_e(config.get('steps'))} steps, seed {_e(config.get('seed'))}. "
        "Floor: an untrained model of the same config and seeds; vae_ceiling: the ground truth encoded and "
        "decoded by the model's VAE (the most its diffusion streams can reach); ceiling: the ground truth.</p>",
        _metrics_table(metrics, systems),
        _comparison_table(metrics.get("comparison")),
        "<h2>Plots</h2>", _plots(metrics, systems),
        "<h2>Sample frames</h2>", *(_sample_block(sample, systems) for sample in samples),
        "</body></html>",
    ]
    write_text_atomic(path, "\n".join(parts))


def _metrics_table(metrics: dict, systems: list[str]) -> str:
    names = list(METRIC_NOTES) + [n for n in metrics["model"] if n not in METRIC_NOTES and n != "num_clips"]
    rows = ["<table><tr><th class='l'>metric</th>" + "".join(f"<th>{s}</th>" for s in systems)
            + "<th class='l'>better</th><th class='l'>what</th></tr>"]
    for name in names:
        if all(metrics[s].get(name) is None for s in systems):
            continue
        direction, note = METRIC_NOTES.get(name, ("", "external metric"))
        cells = "".join(f"<td>{_number(metrics[s].get(name))}</td>" for s in systems)
        better = {"max": "higher", "min": "lower", "0": "near 0"}.get(direction, "")
        rows.append(f"<tr><td class='l'>{_e(name)}</td>{cells}<td class='l'>{better}</td>"
                    f"<td class='l note'>{_e(note)}</td></tr>")
    return "\n".join(rows) + "</table>"


def _comparison_table(comparison: dict | None) -> str:
    """model - baseline per metric, with its paired bootstrap interval over clips."""
    if not comparison:
        return ""
    baseline = comparison["baseline"]
    rows = [f"<h2>Against the baseline</h2><p>baseline <code>{_e(baseline['reference'])}</code>"
            + (f" (version {_e(baseline['version'])})" if baseline.get("version") else "")
            + ", scored on the same clips, seeds and steps: the mean per-clip difference (model - baseline) and "
              "its bootstrap interval over clips.</p>",
            "<table><tr><th class='l'>metric</th><th>mean difference</th><th>interval</th><th>clips</th></tr>"]
    for name, result in comparison["metrics"].items():
        if result["mean"] is None:
            continue
        level = f"{round(100 * result['level'])}%"
        rows.append(f"<tr><td class='l'>{_e(name)}</td><td>{_number(result['mean'])}</td>"
                    f"<td>{level} [{_number(result['low'])}, {_number(result['high'])}]</td>"
                    f"<td>{result['clips']}</td></tr>")
    return "\n".join(rows) + "</table>"


def _plots(metrics: dict, systems: list[str]) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return "<p class='note'>(plots need matplotlib, which is not installed)</p>"
    figure, (bars, per_clip) = pyplot.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    names = [n for n in BOUNDED if any(metrics[s].get(n) is not None for s in systems)]
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        values = [metrics[system].get(n) or 0.0 for n in names]
        bars.bar(np.arange(len(names)) + (i - (len(systems) - 1) / 2) * width, values, width, label=system,
                 color=SYSTEM_COLORS[system])
        ious = [clip[system].get("grounding_iou") or 0.0 for clip in metrics.get("per_clip", [])]
        per_clip.bar(np.arange(len(ious)) + (i - (len(systems) - 1) / 2) * width, ious, width, label=system,
                     color=SYSTEM_COLORS[system])
    bars.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize=8)
    bars.set_ylim(0, 1.05)
    bars.set_title("bounded metrics (higher is better)")
    bars.legend(fontsize=8)
    per_clip.set_xticks(np.arange(len(metrics.get("per_clip", []))))
    per_clip.set_xlabel("clip (metrics.json per_clip order)")
    per_clip.set_ylim(0, 1.05)
    per_clip.set_title("grounding IoU per clip")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    pyplot.close(figure)
    return _img(buffer.getvalue(), "metric plots")


def _sample_block(sample: Sample, systems: list[str]) -> str:
    rows = [f"<h3>{_e(sample.clip_id)}</h3><p>{_e(sample.text)}</p><table>",
            f"<tr><td class='l'>reference</td><td class='l'>{_img(_png([sample.reference]), 'reference')}</td></tr>"]
    for system in systems:
        if system not in sample.outputs:
            continue
        video, motion = sample.outputs[system]
        label = "ground truth" if system == "ceiling" else system
        for kind, frames in (("video", video), ("motion", motion)):
            rows.append(f"<tr><td class='l'>{label} {kind}</td>"
                        f"<td class='l'>{_img(_png(_spread(frames)), f'{label} {kind}')}</td></tr>")
    return "\n".join(rows) + "</table>"


def _spread(frames: np.ndarray, count: int = 5) -> list[np.ndarray]:
    """Up to `count` frames evenly spread over the clip, first and last included."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    return [frames[i] for i in picks]


def _png(frames: list[np.ndarray]) -> bytes:
    """Frames side by side, each scaled (nearest neighbour) to FRAME_HEIGHT, 4 px apart."""
    scaled = [Image.fromarray(f).resize((round(f.shape[1] * FRAME_HEIGHT / f.shape[0]), FRAME_HEIGHT),
                                        Image.NEAREST) for f in frames]
    strip = Image.new("RGB", (sum(s.width for s in scaled) + 4 * (len(scaled) - 1), FRAME_HEIGHT), "white")
    left = 0
    for image in scaled:
        strip.paste(image, (left, 0))
        left += image.width + 4
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _number(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _e(value) -> str:
    return html.escape(str(value))
