"""The training stages for real (DeepSpeed on the CPU, tiny preset, synthetic data)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from helpers.train import spec
from safetensors.torch import load_file

from interactavatar.cli import main
from interactavatar.inference.pipeline import InteractAvatarPipeline
from interactavatar.train.curriculum import Curriculum
from interactavatar.train.stages import run_stage


def test_each_stage_writes_a_loadable_model_directory(trained):
    assert (trained / "vae" / "config.yaml").is_file() and (trained / "vae" / "model.safetensors").is_file()
    for stage in ("pim", "audio", "joint"):
        names = {p.name for p in (trained / stage).iterdir()}
        assert {"config.yaml", "model.safetensors", "vae", "checkpoints"} <= names, stage
    pipeline = InteractAvatarPipeline.from_pretrained(trained / "joint")
    image = torch.randint(0, 255, (88, 88, 3), dtype=torch.uint8).numpy()
    result = pipeline(image, "lift the cup", torch.randn(3200).numpy(), steps=2)
    assert result.video.shape == (5, 88, 88, 3)


def test_stages_train_the_right_parts(trained):
    pim, audio, joint = (load_file(str(trained / s / "model.safetensors")) for s in ("pim", "audio", "joint"))
    pim_key, aim_key = "pim.blocks.0.ffn.0.weight", "aim.blocks.0.ffn.0.weight"
    # audio pretraining leaves PIM as initialised and trains AIM; joint starts from both
    assert not torch.equal(pim[pim_key], audio[pim_key])
    assert not torch.equal(joint[pim_key], pim[pim_key]) and not torch.equal(joint[aim_key], audio[aim_key])
    # the aligner left zero in the stages before joint, moved in joint
    assert audio["aligner.projections.0.weight"].abs().sum() == 0
    assert joint["aligner.projections.0.weight"].abs().sum() > 0
    vae = load_file(str(trained / "vae" / "model.safetensors"))
    vae_in_joint = load_file(str(trained / "joint" / "vae" / "model.safetensors"))
    assert all(torch.equal(vae[k], vae_in_joint[k]) for k in vae)


def test_each_stage_is_an_mlflow_run_with_lineage(trained, train_dataset):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{trained}/mlflow.db")
    runs = client.search_runs(client.get_experiment_by_name("interactavatar").experiment_id)
    by_stage = {r.data.tags["stage"]: r for r in runs}
    assert set(by_stage) == {"vae", "pim", "audio", "joint"}
    joint = by_stage["joint"]
    assert joint.data.tags["dataset_hash"] == by_stage["pim"].data.tags["dataset_hash"]
    assert len(joint.data.tags["dataset_hash"]) == 64 and joint.data.tags["data_rev"]
    assert joint.data.params["stage.engine.zero_stage"] == "2"
    assert joint.data.params["model.aim.dim"] == "32"
    history = client.get_metric_history(joint.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    for name in ("lr", "samples_per_s", "peak_rss_mb", "video_loss"):
        assert name in joint.data.metrics, name
    artifacts = {a.path for a in client.list_artifacts(joint.info.run_id, "model")}
    assert {"model/config.yaml", "model/model.safetensors", "model/vae"} <= artifacts


@pytest.mark.parametrize("stage", ["vae", "pim", "joint"])
def test_interrupted_stage_resumes_to_bit_identical_weights(trained, train_dataset, tmp_path, tracking, stage):
    inputs = {"vae": {}, "pim": {"vae": trained / "vae"},
              "joint": {"vae": trained / "vae", "pim": trained / "pim", "audio": trained / "audio"}}[stage]
    run_stage(spec(stage, train_dataset, tmp_path / "straight", steps=5, **inputs))
    interrupted = spec(stage, train_dataset, tmp_path / "interrupted", steps=5, **inputs)
    run_stage(interrupted, stop_after=3)  # checkpoint at 2, then step 3 is lost
    assert not (tmp_path / "interrupted" / "model.safetensors").exists()
    run_stage(interrupted)
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "interrupted" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []


@pytest.mark.integration
def test_killed_process_resumes_to_bit_identical_weights(trained, train_dataset, tmp_path, tracking):
    """SIGKILL the CLI while it trains (after its first checkpoint), rerun, compare to a straight run."""
    def command(out):
        return [sys.executable, "-m", "interactavatar.cli", "train", "pim", "--preset", "tiny", "--data",
                str(train_dataset), "--vae", str(trained / "vae"), "--out", str(out), "--steps", "12",
                "--checkpoint-every", "4", "--batch-size", "2", "--lr", "2e-3"]

    # This test process's own DeepSpeed rendezvous port must not leak into its children.
    assert "MASTER_PORT" not in os.environ
    env = dict(os.environ)
    assert subprocess.run(command(tmp_path / "straight"), capture_output=True, timeout=600, env=env).returncode == 0
    process = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    pointer = tmp_path / "killed" / "checkpoints" / "LATEST"
    deadline = time.time() + 300
    while not pointer.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert pointer.exists() and not (tmp_path / "killed" / "model.safetensors").exists()
    assert subprocess.run(command(tmp_path / "killed"), capture_output=True, timeout=600, env=env).returncode == 0
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []


def test_curriculum_draws_by_weight_and_can_switch_detection_off():
    generator = torch.Generator().manual_seed(0)
    no_detection = Curriculum.parse("0,1,1")
    assert {no_detection.task(generator) for _ in range(200)} == {"continuation", "generation"}
    tasks = [Curriculum.parse("1,0,3").task(generator) for _ in range(400)]
    assert tasks.count("continuation") == 0 and 50 < tasks.count("detection") < 150
    with pytest.raises(ValueError, match="three weights"):
        Curriculum.parse("1,1")
    with pytest.raises(ValueError, match="non-negative"):
        Curriculum.parse("0,0,0")


def test_cli_names_missing_inputs(train_dataset, tmp_path, capsys):
    # --pim and --audio are optional to the parser (--init replaces them), not to the stage.
    assert main(["train", "joint", "--data", str(train_dataset), "--out", str(tmp_path / "o"), "--vae", "v"]) == 2
    assert "train joint: --pim (the pim stage's output directory) is required" in capsys.readouterr().err
    code = main(["train", "pim", "--preset", "tiny", "--data", str(train_dataset), "--out", str(tmp_path / "o"),
                 "--vae", str(tmp_path / "no-vae"), "--steps", "1"])
    assert code == 2 and "no-vae" in capsys.readouterr().err


def test_foreground_weights_single_out_what_stands_from_the_background():
    from interactavatar.train.objectives import foreground_weights

    pixels = -torch.ones(1, 3, 1, 8, 8)
    pixels[:, 1, :, 2, 3] = 1.0  # one bright line pixel on black, as in a motion video
    weights = foreground_weights(pixels, 20.0)
    assert weights.shape == (1, 1, 1, 8, 8)
    assert weights[0, 0, 0, 2, 3] == 21 and weights.sum() == 63 + 21


def test_palette_class_weights_weigh_each_colour_by_its_rarity():
    from interactavatar.data.render import FINGER_COLORS, WHITE
    from interactavatar.train.objectives import palette_class_weights

    frame = np.zeros((1, 1, 8, 8, 3), np.uint8)  # [N, F, H, W, 3], black
    frame[0, 0, :4, :4] = WHITE  # a 16-pixel box
    frame[0, 0, 7, 7] = FINGER_COLORS[0]  # one thumb pixel
    frame[0, 0, 7, 6] = (30, 30, 30)  # too dark for any colour: background
    motions = torch.from_numpy(frame).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    weights = palette_class_weights(motions, max_weight=5.0)
    assert weights.shape == (1, 1, 1, 8, 8)
    black = 64 - 16 - 1
    assert weights[0, 0, 0, 7, 6] == 1 and weights[0, 0, 0, 6, 6] == 1
    assert weights[0, 0, 0, 0, 0].item() == pytest.approx((black / 16) ** 0.5)
    assert weights[0, 0, 0, 7, 7] == 5.0  # sqrt(47) capped


def test_vae_stage_interleaves_motion_steps_each_kind_in_its_own_order():
    from interactavatar.train.stages import vae_step_kind

    assert [vae_step_kind(step, 1) for step in range(4)] == [(False, 0), (True, 0), (False, 1), (True, 1)]
    assert [vae_step_kind(step, 2) for step in range(6)] == [
        (False, 0), (True, 0), (True, 1), (False, 1), (True, 2), (True, 3)]
    with pytest.raises(ValueError, match="--motion-steps 0"):
        spec("vae", Path("data"), Path("out"), vae_motion_steps=0)
