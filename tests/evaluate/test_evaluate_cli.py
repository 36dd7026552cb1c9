"""`interactavatar evaluate` end to end on the evaluation dataset with the tiny preset, logged to MLflow
on a SQLite store, nested under a parent run; and the external-metric interface."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from interactavatar.cli import main
from interactavatar.evaluate import external
from interactavatar.evaluate.external import load_external_metric


@pytest.fixture(scope="module")
def evaluation(eval_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One evaluation of an untrained tiny model (seed 1; the floor has seed 0), one sampling step."""
    import mlflow

    from interactavatar.model.bundle import init_model_directory

    root = tmp_path_factory.mktemp("evaluate")
    model = init_model_directory("tiny", root / "model", seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        mlflow.set_experiment("interactavatar")
        with mlflow.start_run(run_name="pipeline") as parent:
            parent_id = parent.info.run_id
        code = main(["evaluate", "--model", str(model), "--data", str(eval_dataset), "--out", str(root / "out"),
                     "--steps", "1", "--parent-run-id", parent_id])
        runs = mlflow.search_runs(experiment_names=["interactavatar"], output_format="list")
        mlflow.set_tracking_uri(None)
    return {"code": code, "out": root / "out", "parent_id": parent_id, "runs": runs}


def test_writes_metrics_for_model_floor_and_ceiling(evaluation):
    assert evaluation["code"] == 0
    metrics = json.loads((evaluation["out"] / "metrics.json").read_text())
    assert set(metrics) == {"model", "floor", "vae_ceiling", "ceiling", "per_clip", "config", "eval_set"}
    for gate_metric in ("grounding_iou", "sync_confidence"):  # what registration reads
        assert isinstance(metrics["model"][gate_metric], float)
    assert metrics["ceiling"]["grounding_iou"] == 1.0
    assert metrics["ceiling"]["grounding_iou"] > metrics["floor"]["grounding_iou"]
    assert metrics["ceiling"]["pck_body"] > metrics["floor"]["pck_body"]
    assert metrics["ceiling"]["ssim"] > metrics["floor"]["ssim"]
    # The tiny model's VAE is untrained: the truth does not survive its round trip.
    assert metrics["vae_ceiling"]["ssim"] < metrics["ceiling"]["ssim"]
    assert metrics["vae_ceiling"]["num_clips"] == metrics["model"]["num_clips"]
    assert [clip["clip_id"] for clip in metrics["per_clip"]] == ["synth0-000002"]  # the test split
    assert metrics["config"]["split"] == "test" and metrics["config"]["steps"] == 1
    assert metrics["model"]["num_clips"] == 1.0


def test_files_record_relative_paths_and_a_row_per_system_for_dvc_plots(evaluation, eval_dataset):
    out = evaluation["out"]
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert (config["model_dir"], config["out_dir"]) == ("../model", ".")
    assert (out / config["data_dir"]).resolve() == eval_dataset.resolve()
    rows = json.loads((out / "metrics_by_system.json").read_text())
    assert [row["system"] for row in rows] == ["model", "floor", "vae_ceiling", "ceiling"]
    assert set(rows[0]) == {"system", "grounding_iou", "sync_confidence", "wrong_object_rate", "pck_body", "ssim"}
    assert rows[-1]["grounding_iou"] == 1.0


def test_report_has_table_plots_and_frames(evaluation):
    report = (evaluation["out"] / "report.html").read_text()
    assert "<table>" in report and "grounding_iou" in report
    assert "alt='metric plots'" in report
    for row in ("reference", "model video", "model motion", "floor video", "ground truth motion"):
        assert f"alt='{row}' src='data:image/png;base64," in report


def test_logs_to_mlflow_nested_under_the_parent(evaluation):
    child = next(run for run in evaluation["runs"] if run.info.run_name == "evaluate")
    assert child.data.tags["mlflow.parentRunId"] == evaluation["parent_id"]
    assert {"model_grounding_iou", "floor_grounding_iou", "ceiling_grounding_iou", "model_sync_confidence"} <= set(
        child.data.metrics)
    assert child.data.params["evaluate.split"] == "test"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{evaluation['out'].parent / 'mlflow.db'}")
    names = {item.path for item in client.list_artifacts(child.info.run_id, "evaluation")}
    assert names == {"evaluation/metrics.json", "evaluation/report.html"}


def test_weights_metric_is_refused_clearly_when_not_bundled(tmp_path, capsys):
    weights = tmp_path / "syncnet.pth"
    weights.write_bytes(b"weights")
    code = main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--syncnet", str(weights)])
    assert code == 2
    assert "SyncNet lip-sync weights are not bundled" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="--hand-detector .*no such weights"):
        load_external_metric("hand_detector", tmp_path / "missing.pth")


def test_weights_metric_plugs_in_through_an_entry_point(tmp_path, monkeypatch):
    weights = tmp_path / "vlm"
    weights.mkdir()

    class EntryPoint:
        def load(self):
            return lambda path: (lambda video, motion, truth: {"vlm_qa": float(np.mean(video) > 0), "path": str(path)})

    monkeypatch.setattr(external, "entry_points", lambda group, name: [EntryPoint()] if name == "vlm" else [])
    metric = load_external_metric("vlm", weights)
    assert metric(np.ones((1, 2, 2, 3)), None, None) == {"vlm_qa": 1.0, "path": str(weights)}


def test_a_baseline_is_scored_on_the_same_clips_seeds_and_steps(eval_dataset, evaluation, tmp_path, monkeypatch):
    """The model against itself: same clips, seeds and steps give identical per-clip scores, so
    every paired difference and its interval is exactly 0; the eval set's fingerprint is recorded,
    and MLflow gets the intervals."""
    import mlflow

    model = evaluation["out"].parent / "model"
    out = tmp_path / "paired"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # Three train clips: an interval needs two (the test split has one).
    assert main(["evaluate", "--model", str(model), "--data", str(eval_dataset), "--out", str(out), "--steps", "1",
                 "--split", "train", "--num-clips", "3", "--no-floor", "--baseline", str(model), "--level", "0.9"]) == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("interactavatar").experiment_id])
    assert run.data.metrics["vs_baseline_grounding_iou_low"] == 0.0 and "baseline_ssim" in run.data.metrics
    metrics = json.loads((out / "metrics.json").read_text())
    baseline = metrics["comparison"]["baseline"]
    assert baseline["version"] == "" and not Path(baseline["reference"]).is_absolute()
    assert (out / baseline["reference"]).resolve() == (out / metrics["config"]["baseline"]).resolve() == model.resolve()
    compared = metrics["comparison"]["metrics"]
    assert {"grounding_iou", "sync_confidence", "ssim"} <= compared.keys()
    for name, result in compared.items():
        if result["clips"]:
            assert (result["mean"], result["low"], result["high"], result["level"]) == (0.0, 0.0, 0.0, 0.9), name
    fingerprint = metrics["eval_set"]
    clips = [clip["clip_id"] for clip in metrics["per_clip"]]
    assert fingerprint["clip_ids"] == clips and fingerprint["seeds"] == list(range(len(clips)))
    assert fingerprint["split"] == "train" and fingerprint["steps"] == 1 and fingerprint["data_rev"] == "unversioned"
    assert all("baseline" in clip for clip in metrics["per_clip"])
    assert "Against the baseline" in (out / "report.html").read_text()
