"""A stage refuses what used to go through silently, on real PIM stages (tiny preset, DeepSpeed on the
CPU): a second trainer on the same --out, a resume with other settings, and a loss that is no
longer finite.

Every stage here is `spec("pim", ...)` as the `trained` fixture's PIM stage was trained, so one
that goes on after a refusal must end with that stage's weights, bit for bit.
"""

import dataclasses
import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from helpers.train import ENGINE, spec
from safetensors.torch import load_file

from interactavatar.cli import main
from interactavatar.train import stages
from interactavatar.train.divergence import NonFiniteLoss
from interactavatar.train.lock import LOCK_FILE
from interactavatar.train.resume import ResumeMismatch
from interactavatar.train.stages import run_stage


def pim(trained, data, out, **kwargs):
    return spec("pim", data, out, vae=trained / "vae", **kwargs)


def pim_weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def assert_straight_weights(trained, out) -> None:
    straight, resumed = pim_weights(trained / "pim"), pim_weights(out)
    assert straight.keys() == resumed.keys()
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []


def pointer(out) -> str:
    return (out / "checkpoints" / "LATEST").read_text()


@pytest.mark.integration
def test_a_second_trainer_on_the_same_out_is_refused_naming_the_holder(trained, train_dataset, tmp_path, tracking,
                                                                       capsys):
    out = tmp_path / "out"
    # A real trainer in its own process, with more steps than this test will ever wait for.
    holder = subprocess.Popen([sys.executable, "-m", "interactavatar.cli", "train", "pim", "--preset", "tiny",
                               "--data", str(train_dataset), "--vae", str(trained / "vae"), "--out", str(out),
                               "--steps", "1000000", "--checkpoint-every", "1000000", "--batch-size", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while holder.poll() is None and time.time() < deadline:
            lock = out / LOCK_FILE
            if lock.is_file() and lock.read_text() and json.loads(lock.read_text())["pid"] == holder.pid:
                break
            time.sleep(0.1)
        assert holder.poll() is None, holder.stderr.read().decode()[-3000:]

        code = main(["train", "pim", "--preset", "tiny", "--data", str(train_dataset), "--vae", str(trained / "vae"),
                     "--out", str(out), "--steps", "2", "--batch-size", "2"])
        error = capsys.readouterr().err
        assert code == 2, error
        assert f"--out {out} is in use by another trainer (pid {holder.pid} on host {socket.gethostname()}, " \
               "started 20" in error
        assert holder.poll() is None, "the refused trainer left the holder alone"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stderr.close()
    # The kernel released the killed holder's lock: the next trainer takes it, and a clean exit
    # removes the file.
    run_stage(pim(trained, train_dataset, out, steps=2))
    assert (out / "model.safetensors").is_file() and not (out / LOCK_FILE).exists()


def test_a_resume_with_other_settings_is_refused_listing_them_and_steps_may_grow(trained, train_dataset, tmp_path,
                                                                                tracking):
    out = tmp_path / "out"
    run_stage(pim(trained, train_dataset, out, steps=2))
    written = pim_weights(out)

    other = dataclasses.replace(ENGINE, learning_rate=1e-3, micro_batch_size=4)
    with pytest.raises(ResumeMismatch) as refused:
        run_stage(pim(trained, train_dataset, out, steps=4, seed=1, engine=other))
    message = str(refused.value)
    assert message.startswith(f"{out / 'checkpoints' / 'step-00000002' / 'MANIFEST.json'}: ")
    assert message.endswith("Differences: engine.learning_rate: 0.002 in the checkpoint, 0.001 now; "
                            "engine.micro_batch_size: 2 in the checkpoint, 4 now; seed: 0 in the checkpoint, 1 now")
    with pytest.raises(ResumeMismatch, match=r"--steps 1 is below the step of the checkpoint in .* \(2\)"):
        run_stage(pim(trained, train_dataset, out, steps=1))
    # Nothing was trained or written by the refused attempts.
    assert pointer(out) == "step-00000002"
    assert [k for k, v in pim_weights(out).items() if not torch.equal(v, written[k])] == []

    # 2 steps extended to 4 end where 4 steps straight do.
    run_stage(pim(trained, train_dataset, out, steps=4))
    assert_straight_weights(trained, out)


def test_a_loss_gone_nan_stops_the_stage_naming_it_and_the_step_before_anything_is_saved(
        trained, train_dataset, tmp_path, tracking, monkeypatch):
    """The third step's batch carries NaN features (as bad data would): its loss is NaN."""
    real_micro_batch = stages._micro_batch

    def nan_at_step_3(spec, data, layout, step, micro, device):
        batch, randomness = real_micro_batch(spec, data, layout, step, micro, device)
        if step == 2:
            batch = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in batch.items()}
        return batch, randomness

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(stages, "_micro_batch", nan_at_step_3)
        with pytest.raises(NonFiniteLoss, match=r"train pim: the loss( and the gradient norm are| is) not finite at step 3 "
                                                r".*A rerun resumes from .*step-00000002"):
            run_stage(pim(trained, train_dataset, out))
    assert pointer(out) == "step-00000002"
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-00000002"]
    assert not (out / "model.safetensors").exists()

    # With the data mended, the rerun goes on from step 2.
    run_stage(pim(trained, train_dataset, out))
    assert_straight_weights(trained, out)
