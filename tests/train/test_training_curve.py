"""Training curves (train/curve.py) and what dvc.yaml's plots make of them: each stage of the
session's trained model wrote its training_curve.tsv; `dvc plots show` draws those and a real
evaluation's metrics_by_system.json, laid out as dvc.yaml expects (runs/STAGE, eval/)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.repo_state import DVC, REPO, run_tool, tool_environment

from interactavatar.train.curve import CURVE_FILE, HEADER, TrainingCurve

STAGES = ("vae", "pim", "audio", "joint")


def _rows(path: Path) -> list[tuple[int, float]]:
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == HEADER
    return [(int(step), float(loss)) for step, loss in (line.split("\t") for line in lines[1:])]


def test_each_stage_wrote_one_row_per_logged_step(trained):
    for stage in STAGES:
        rows = _rows(trained / stage / CURVE_FILE)
        steps = [step for step, _ in rows]
        assert steps == list(range(1, len(rows) + 1)) and len(rows) >= 4, stage  # log_every=1
        assert all(math.isfinite(loss) for _, loss in rows), stage


def test_a_resumed_stage_drops_the_rows_after_its_checkpoint(tmp_path):
    (tmp_path / CURVE_FILE).write_text(HEADER + "1\t0.9\n2\t0.8\n3\t0.7\n4\t0.6\n5\t0.")  # killed mid-line
    curve = TrainingCurve(tmp_path, resume_step=2)
    curve.append(3, {"loss": 0.65, "lr": 1e-3})
    assert _rows(tmp_path / CURVE_FILE) == [(1, 0.9), (2, 0.8), (3, 0.65)]

    TrainingCurve(tmp_path, resume_step=0)  # a new run in the same --out starts the file again
    assert _rows(tmp_path / CURVE_FILE) == []
    TrainingCurve(tmp_path / "elsewhere", resume_step=0, enabled=False).append(1, {"loss": 1.0})
    assert not (tmp_path / "elsewhere").exists(), "only the process that writes the outputs writes the curve"


@pytest.mark.slow
def test_dvc_plots_show_the_training_curves_and_the_evaluation(trained, train_dataset, tmp_path):
    env = tool_environment(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, repo / name)
    run_tool(["git", "init", "-q"], repo, env)
    run_tool([DVC, "init", "-q"], repo, env)
    for stage in STAGES:
        (repo / "runs" / stage).mkdir(parents=True)
        shutil.copy(trained / stage / CURVE_FILE, repo / "runs" / stage / CURVE_FILE)
    subprocess.run([sys.executable, "-m", "interactavatar.cli", "evaluate", "--model", str(trained / "joint"),
                    "--data", str(train_dataset), "--out", "eval", "--steps", "1", "--no-floor"],
                   cwd=repo, env=env, check=True, capture_output=True)

    plots = json.loads(run_tool([DVC, "plots", "show", "--json"], repo, env))["data"]

    (loss,) = plots["training_loss"]
    values = loss["content"]["data"]["values"]
    assert {row["filename"] for row in values} == {f"{stage}/{CURVE_FILE}" for stage in STAGES}
    assert len(values) == sum(len(_rows(trained / stage / CURVE_FILE)) for stage in STAGES)
    assert all(math.isfinite(float(row["loss"])) for row in values)
    for plot, metric in (("box_iou", "grounding_iou"), ("wrong_object", "wrong_object_rate"), ("pose", "pck_body"),
                         ("ssim", "ssim"), ("lip_sync", "sync_confidence")):
        (bars,) = plots[plot]
        rows = {row["system"]: row[metric] for row in bars["content"]["data"]["values"]}
        assert set(rows) == {"model", "vae_ceiling", "ceiling"}, plot
        assert all(isinstance(value, float) for value in rows.values()), plot
    assert plots["box_iou"][0]["content"]["encoding"]["x"]["field"] == "grounding_iou"
