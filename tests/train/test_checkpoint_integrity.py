"""Checkpoints that cannot be trusted are never resumed: real PIM stages (tiny preset, DeepSpeed on
the CPU) whose tags are damaged on the disk, replaced by a pickle that runs code, or cut short by a
full disk; and the order in which a tag reaches the disk.

Every stage here is `spec("pim", ...)` as the `trained` fixture's PIM stage was trained, so a
resumed one must end with that stage's weights, bit for bit.
"""

import errno
import os
import re

import pytest
import torch
from helpers.train import ENGINE, spec
from safetensors.torch import load_file

from interactavatar.cli import main
from interactavatar.train import checkpoint_io
from interactavatar.train.checkpoint import CheckpointFallback
from interactavatar.train.checkpoint_io import UnsafeCheckpoint
from interactavatar.train.integrity import MANIFEST, CorruptCheckpoint, TagRecord, record_tag, verify_tag
from interactavatar.train.stages import run_stage

MODEL_STATES = "mp_rank_00_model_states.pt"
OPTIMIZER_SHARD = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


def pim(trained, data, out, **kwargs):
    return spec("pim", data, out, vae=trained / "vae", **kwargs)


def tag(out, step: int):
    return out / "checkpoints" / f"step-{step:08d}"


def flip_a_bit(path) -> None:
    """What a failing disk or a bad copy does: the size stays, one bit changes."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def assert_straight_weights(trained, out) -> None:
    straight = load_file(str(trained / "pim" / "model.safetensors"))
    resumed = load_file(str(out / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []


class RunsCode:
    """Unpickling it runs a statement: what a checkpoint from a hostile S3 mirror could hold."""

    def __init__(self, statement: str):
        self.statement = statement

    def __reduce__(self):
        return exec, (self.statement,)


@pytest.mark.parametrize("damaged", [MODEL_STATES, OPTIMIZER_SHARD])
def test_a_flipped_bit_in_the_newest_tag_resumes_from_the_previous_one(trained, train_dataset, tmp_path, tracking,
                                                                       damaged):
    out = tmp_path / "out"
    run_stage(pim(trained, train_dataset, out), stop_after=4)  # tags at steps 2 and 4, no model yet
    bad = tag(out, 4) / damaged
    flip_a_bit(bad)
    with pytest.warns(CheckpointFallback, match=rf"resuming from step-00000002: .*{re.escape(str(bad))}: sha256 is "):
        run_stage(pim(trained, train_dataset, out))
    # Steps 3 and 4 were trained again from step 2, not from the damaged tag.
    assert_straight_weights(trained, out)
    assert verify_tag(tag(out, 4))[1] == [], "step 4 was saved again, whole"


def test_with_every_tag_damaged_the_cli_refuses_naming_each_file(trained, train_dataset, tmp_path, tracking, capsys):
    out = tmp_path / "out"
    run_stage(pim(trained, train_dataset, out), stop_after=4)
    flip_a_bit(tag(out, 4) / OPTIMIZER_SHARD)
    truncated = tag(out, 2) / MODEL_STATES
    truncated.write_bytes(truncated.read_bytes()[:1000])
    code = main(["train", "pim", "--preset", "tiny", "--data", str(train_dataset), "--vae", str(trained / "vae"),
                 "--out", str(out), "--steps", "4", "--checkpoint-every", "2", "--log-every", "1",
                 "--batch-size", "2", "--lr", repr(ENGINE.learning_rate), "--warmup-steps", "2"])
    error = capsys.readouterr().err
    assert code == 2, error
    assert "no checkpoint passes its integrity check" in error
    assert f"{tag(out, 4) / OPTIMIZER_SHARD}: sha256 is " in error
    assert f"{truncated}: size is 1000 bytes, the record says " in error
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("recorded", [True, False], ids=["record rewritten to match", "record untouched"])
def test_a_checkpoint_pickle_that_would_run_code_is_refused_and_never_runs(trained, train_dataset, tmp_path, tracking,
                                                                           recorded):
    """Whoever can write the checkpoints (a shared disk, the S3 mirror) can write their record too:
    the hash catches the untouched record, unpickling tensors only catches the rewritten one."""
    out = tmp_path / "out"
    run_stage(pim(trained, train_dataset, out), stop_after=2)
    marker = tmp_path / "code-ran"
    payload = tag(out, 2) / MODEL_STATES
    torch.save({"module": RunsCode(f"open({str(marker)!r}, 'w').write('pwned')")}, payload)
    if recorded:
        old = TagRecord.read(tag(out, 2))
        record_tag(tag(out, 2), old.tag, old.step, old.settings)
    expected = (UnsafeCheckpoint, rf"{re.escape(str(payload))}: refused to unpickle it \(Unsupported global: GLOBAL exec ") if recorded \
        else (CorruptCheckpoint, rf"{re.escape(str(payload))}: size is \d+ bytes, the record says ")
    with pytest.raises(expected[0], match=expected[1]):
        run_stage(pim(trained, train_dataset, out))
    assert not marker.exists()
    assert not (out / "model.safetensors").exists()
    # The payload is live: DeepSpeed's own loader (weights_only=False) would have run it.
    torch.load(payload, weights_only=False)
    assert marker.read_text() == "pwned"


def test_a_full_disk_stops_the_save_saying_so_and_the_previous_tag_resumes(trained, train_dataset, tmp_path,
                                                                          tracking, monkeypatch):
    """The optimizer shard of step 4 is written to /dev/full, where every write fails with ENOSPC,
    as on a full disk; everything else is written for real."""
    out = tmp_path / "out"
    full = tag(out, 4) / OPTIMIZER_SHARD

    def disk_full_for_the_shard(path, *args, **kwargs):
        return open("/dev/full" if os.fspath(path) == str(full) else path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_io, "open", disk_full_for_the_shard, raising=False)
        with pytest.raises(OSError, match=rf"the disk is full \(no space left writing {re.escape(str(full))};.*a "
                                          rf"rerun resumes from {re.escape(str(tag(out, 2)))} once there is space") as failure:
            run_stage(pim(trained, train_dataset, out))
    assert failure.value.errno == errno.ENOSPC
    assert (out / "checkpoints" / "LATEST").read_text() == "step-00000002"
    assert not tag(out, 4).exists(), "the half-written tag is removed"
    assert not (out / "model.safetensors").exists()

    # Space again.
    run_stage(pim(trained, train_dataset, out))
    assert_straight_weights(trained, out)


def test_a_tag_reaches_the_disk_before_its_record_and_the_record_before_the_pointer(trained, train_dataset,
                                                                                   tmp_path, tracking, monkeypatch):
    """Every fsync of a real save, in order: the tag's files, its folder, its record (the temporary
    file, then the folder it was renamed in), then the pointer's temporary file and its folder."""
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", recording_fsync)
        run_stage(pim(trained, train_dataset, out), stop_after=2)
    checkpoints, folder = str(out / "checkpoints"), str(tag(out, 2))
    synced = [path for path in synced if path.startswith(checkpoints)]
    record = TagRecord.read(tag(out, 2))
    assert sorted(record.files) == [MODEL_STATES, OPTIMIZER_SHARD]

    def position(pattern: str) -> int:
        return next(i for i, path in enumerate(synced) if re.fullmatch(pattern, path))

    files = max(position(re.escape(f"{folder}/{name}")) for name in record.files)
    record_file = position(rf"{re.escape(folder)}/\.{MANIFEST}\..*\.tmp\.json")
    pointer_file = position(rf"{re.escape(checkpoints)}/\.LATEST\..*\.tmp")
    assert files < position(re.escape(folder)) < record_file < pointer_file
    assert synced[record_file + 1] == folder and synced[pointer_file + 1] == checkpoints
