"""`interactavatar evaluate`: generate on a held-out split with fixed seeds and score the model
between a floor and a ceiling.

1. Load the model directory and the split's clips at the model's sizes (`truth.load_truth`).
2. Generate each clip from its first frame, sentence, speech and object image (the target cropped
   from the first frame by its box, as training takes it) (seed = `seed` + clip index). No pose
   image: the pipeline draws the first motion frame itself (PIM detection), so the grounding
   metrics see the model find the object, not the ground truth's box.
3. Floor: an untrained model of the same config (same seeds), built in a temporary directory.
   VAE ceiling: the ground truth encoded and decoded by the model's VAE, the most its diffusion
   streams can reach: a model near it is limited by its VAE, not by what its DiTs learned.
   Ceiling: the ground truth itself (its video and its motion rendered at the motion size).
4. Score every clip for every system, average, write `metrics.json`, `report.html` and
   `metrics_by_system.json` (the headline metrics, one row per system: what `dvc plots show` draws,
   dvc.yaml's plots), and log to MLflow when a run is active or MLFLOW_TRACKING_URI is set.

The files are committed with the experiment that made them, so the paths they record are relative
to their folder (`data.versioning.portable_path`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from interactavatar.data.versioning import portable_path
from interactavatar.evaluate.compare import DEFAULT_LEVEL, compare
from interactavatar.evaluate.external import ExternalMetric, load_external_metric
from interactavatar.evaluate.report import SYSTEMS, Sample, write_report
from interactavatar.evaluate.score import aggregate, score_clip
from interactavatar.evaluate.truth import ClipTruth, load_truth, split_clips
from interactavatar.io.files import write_text_atomic
from interactavatar.io.model_refs import resolve_model
from interactavatar.io.progress import Progress

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
PLOT_FILE = "metrics_by_system.json"
# The headline metrics: the gate's primary metric and guards, printed by `interactavatar evaluate`
# and drawn by `dvc plots show`.
SUMMARY_METRICS = ("grounding_iou", "sync_confidence", "wrong_object_rate", "pck_body", "ssim")


@dataclass
class EvaluationSettings:
    """What `interactavatar evaluate` was asked; recorded under "config" in metrics.json."""

    model_dir: Path
    data_dir: Path
    out_dir: Path
    split: str = "test"
    num_clips: int | None = None
    steps: int | None = None
    seed: int = 0
    floor: bool = True
    max_offset: int = 4
    sample_clips: int = 3
    device: str = "cpu"
    external: dict[str, Path] = field(default_factory=dict)
    parent_run_id: str | None = None
    # A second model scored on the same clips, seeds and steps (a directory, s3:// URI or models:/
    # reference); each metric then gets a paired bootstrap interval of model - baseline at `level`.
    baseline: str | None = None
    level: float = DEFAULT_LEVEL
    # The data's revision, when `data_dir` is a fetched copy outside its git repository.
    data_rev: str | None = None


def evaluate(settings: EvaluationSettings) -> dict:
    """Run the evaluation; returns what metrics.json holds."""
    from interactavatar.inference.pipeline import InteractAvatarPipeline

    # External metrics first: a missing plugin should stop the run before minutes of generation.
    externals = {kind: load_external_metric(kind, path) for kind, path in settings.external.items()}
    pipeline = InteractAvatarPipeline.from_pretrained(settings.model_dir, settings.device)
    truths = [load_truth(clip, pipeline.cfg) for clip in split_clips(settings.data_dir, settings.split,
                                                                      settings.num_clips)]
    scores: dict[str, list[dict]] = {}
    samples = [Sample(t.clip_id, t.text, t.video[0], {}) for t in truths[: settings.sample_clips]]
    scores["model"] = _score_pipeline("model", pipeline, truths, settings, externals, samples)
    baseline = None
    if settings.baseline:
        with tempfile.TemporaryDirectory(prefix="interactavatar-baseline-") as scratch:
            baseline = resolve_model(settings.baseline, scratch)
            other = InteractAvatarPipeline.from_pretrained(baseline.path, settings.device)
            if (other.cfg.video_size, other.cfg.motion_size) != (pipeline.cfg.video_size, pipeline.cfg.motion_size):
                raise ValueError(f"evaluate: the baseline {settings.baseline} generates at "
                                 f"{other.cfg.video_size}/{other.cfg.motion_size}, the model at "
                                 f"{pipeline.cfg.video_size}/{pipeline.cfg.motion_size}: not the same clips")
            scores["baseline"] = _score_pipeline("baseline", other, truths, settings, externals, samples)
    if settings.floor:
        with tempfile.TemporaryDirectory(prefix="interactavatar-floor-") as scratch:
            floor = _untrained_like(pipeline, Path(scratch) / "floor", settings)
            scores["floor"] = _score_pipeline("floor", floor, truths, settings, externals, samples)
    vae = pipeline.bundle.vae
    scores["vae_ceiling"] = [_score("vae_ceiling", vae_round_trip(vae, t.video), vae_round_trip(vae, t.motion),
                                    t, settings, externals, samples, index) for index, t in enumerate(truths)]
    scores["ceiling"] = [_score("ceiling", t.video, t.motion, t, settings, externals, samples, index)
                         for index, t in enumerate(truths)]

    metrics = {system: aggregate(per_clip) for system, per_clip in scores.items()}
    metrics["per_clip"] = [{"clip_id": t.clip_id, "text": t.text, **{s: scores[s][i] for s in scores}}
                           for i, t in enumerate(truths)]
    metrics["config"] = _config_record(settings, pipeline.cfg)
    metrics["eval_set"] = eval_set_fingerprint(settings, truths, pipeline.cfg)
    if baseline is not None:
        names = sorted({name for clip in scores["model"] for name, value in clip.items()
                        if isinstance(value, (int, float)) and name != "generate_s"})
        reference = _recorded_reference(baseline.reference, settings.out_dir)
        metrics["comparison"] = {"baseline": {"reference": reference, "version": baseline.version},
                                 "metrics": compare(scores["model"], scores["baseline"], names, settings.level,
                                                    seed=settings.seed)}
    out = Path(settings.out_dir)
    write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=1) + "\n")
    write_text_atomic(out / PLOT_FILE, json.dumps(plot_rows(metrics), indent=1) + "\n")
    write_report(out / REPORT_FILE, metrics, samples)
    log_to_mlflow(metrics, out, settings.parent_run_id)
    return metrics


def _score_pipeline(system: str, pipeline, truths: list[ClipTruth], settings: EvaluationSettings,
                    externals: dict[str, ExternalMetric], samples: list[Sample]) -> list[dict]:
    per_clip = []
    clips = Progress(f"evaluate {system}", len(truths), unit="clip")
    for index, truth in clips.over(enumerate(truths)):
        started = time.perf_counter()
        result = pipeline(truth.image, truth.text, truth.speech, num_frames=truth.num_frames, steps=settings.steps,
                          seed=settings.seed + index, face_box=truth.face_box_source,
                          object_image=truth.object_image)
        seconds = time.perf_counter() - started
        scores = _score(system, result.video, result.motion, truth, settings, externals, samples, index)
        per_clip.append({**scores, "generate_s": seconds})
    return per_clip


def _score(system: str, video: np.ndarray, motion: np.ndarray, truth: ClipTruth, settings: EvaluationSettings,
           externals: dict[str, ExternalMetric], samples: list[Sample], index: int) -> dict:
    if index < len(samples):
        samples[index].outputs[system] = (video, motion)
    scores = score_clip(video, motion, truth, settings.max_offset)
    for metric in externals.values():
        scores.update(metric(video, motion, truth))
    return scores


@torch.no_grad()
def vae_round_trip(vae, frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] uint8 (T = 1 + 4k) -> the same frames encoded and decoded by `vae`."""
    from interactavatar.inference.pipeline import to_frames, to_pixels

    return to_frames(vae.decode(vae.encode(to_pixels(frames, next(vae.parameters()).device))))


def _untrained_like(pipeline, directory: Path, settings: EvaluationSettings):
    """The floor: the model's own config (so sizes match even for a customised preset), randomly
    initialised with the evaluation's seed, saved and loaded like any model directory."""
    from interactavatar.inference.pipeline import InteractAvatarPipeline
    from interactavatar.model.bundle import build_bundle, save_bundle

    save_bundle(build_bundle(pipeline.cfg, seed=settings.seed), directory)
    return InteractAvatarPipeline.from_pretrained(directory, settings.device)


def eval_set_fingerprint(settings: EvaluationSettings, truths: list[ClipTruth], model_config) -> dict:
    """What makes two evaluations comparable: the data's revision, the split, the clips, the seeds
    and the sampling steps."""
    from interactavatar.data.versioning import data_revision

    return {"data_rev": settings.data_rev or data_revision(settings.data_dir), "split": settings.split,
            "clip_ids": [t.clip_id for t in truths], "seeds": [settings.seed + i for i in range(len(truths))],
            "steps": settings.steps or model_config.sampler.steps}


def plot_rows(metrics: dict) -> list[dict]:
    """One row per system scored: its name and its headline metrics (dvc.yaml's bar charts)."""
    return [{"system": system, **{name: metrics[system].get(name) for name in SUMMARY_METRICS}}
            for system in SYSTEMS if system in metrics]


def _recorded_reference(reference: str | None, out_dir: Path) -> str | None:
    """A model reference as metrics.json records it: a local directory relative to `out_dir`, a
    URI (models:/, s3://) as it is."""
    return portable_path(reference, out_dir) if reference and Path(reference).exists() else reference


def _config_record(settings: EvaluationSettings, model_config) -> dict:
    """The settings, paths relative to the output folder (where metrics.json lies)."""
    out = settings.out_dir
    record = {k: portable_path(v, out) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    record["external"] = {k: portable_path(v, out) for k, v in settings.external.items()}
    record["baseline"] = _recorded_reference(settings.baseline, out)
    record.update(preset=model_config.name, video_size=list(model_config.video_size),
                  motion_size=list(model_config.motion_size), num_frames=model_config.num_frames,
                  steps=settings.steps or model_config.sampler.steps)
    return record


def log_to_mlflow(metrics: dict, out_dir: Path, parent_run_id: str | None = None) -> str | None:
    """Log the systems' metrics (prefixed model_/baseline_/floor_/ceiling_; a comparison's intervals as
    vs_baseline_<metric>_mean|low|high), the settings, metrics.json and the
    report into the active MLflow run, or into a new "evaluate" run (nested under `parent_run_id`)
    when MLFLOW_TRACKING_URI is set. Returns the run id, None when MLflow is not in use."""
    # No active run can exist unless mlflow was imported; importing it just to ask costs seconds.
    mlflow = sys.modules.get("mlflow")
    active = mlflow.active_run() if mlflow else None
    if active is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    import mlflow

    from interactavatar.config import EXPERIMENT
    from interactavatar.train.tracking import flatten

    values = {f"{system}_{name}": value for system in SYSTEMS for name, value in metrics.get(system, {}).items()
              if isinstance(value, (int, float))}
    # Against a baseline: each metric's mean paired difference and its interval's bounds.
    values.update({f"vs_baseline_{name}_{bound}": result[bound]
                   for name, result in metrics.get("comparison", {}).get("metrics", {}).items()
                   for bound in ("mean", "low", "high") if result[bound] is not None})
    params = {k: str(v)[:6000] for k, v in flatten("evaluate", metrics["config"], {}).items()}
    started = None
    if active is None or parent_run_id is not None:
        if active is None:
            mlflow.set_experiment(EXPERIMENT)
        started = mlflow.start_run(run_name="evaluate", parent_run_id=parent_run_id, nested=active is not None,
                                   tags={"stage": "evaluate"})
    try:
        mlflow.log_metrics(values)
        mlflow.log_params(params)
        for name in (METRICS_FILE, REPORT_FILE):
            mlflow.log_artifact(str(Path(out_dir) / name), artifact_path="evaluation")
        return mlflow.active_run().info.run_id
    finally:
        if started is not None:
            mlflow.end_run()
