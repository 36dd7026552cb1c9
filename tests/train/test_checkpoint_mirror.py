"""The checkpoint mirror on a real S3 server (SeaweedFS on loopback): what a node that comes back on
a fresh disk restores. The files stand in for DeepSpeed's (named as ZeRO-2 names them on two ranks,
one rank per node; any contents), each node's recorded as CheckpointManager records them;
tests/pipeline/test_trainjob.py mirrors real ones, and so does the last test here."""

import json
import re

import pytest
from helpers.train import spec

from interactavatar.io.storage import client, ensure_bucket, object_sizes, parse_uri, read_bytes, upload_bytes
from interactavatar.train.checkpoint import MIRROR_ENV, CheckpointManager
from interactavatar.train.checkpoint_mirror import MIRROR_POINTER, CheckpointMirror
from interactavatar.train.integrity import MANIFEST, CorruptCheckpoint, TagRecord, record_tag
from interactavatar.train.stages import run_stage

BUCKET = "checkpoint-mirror-test"
MODEL_STATES = "mp_rank_00_model_states.pt"


def optimizer_shard(rank: int) -> str:
    return f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"


@pytest.fixture
def mirror(s3_server, monkeypatch, tmp_path):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    ensure_bucket(client(), BUCKET)
    return CheckpointMirror(f"s3://{BUCKET}/{tmp_path.name}/checkpoints")


def write_tag(disk, tag: str, names: list[str]) -> None:
    """A tag's files on one node's disk, and its record of them."""
    (disk / tag).mkdir(parents=True, exist_ok=True)
    for name in names:
        (disk / tag / name).write_bytes(f"{tag}/{name} ".encode() * 100)
    record_tag(disk / tag, tag, int(tag.removeprefix("step-")), {"seed": 3})


def save_on_two_nodes(mirror: CheckpointMirror, disks, tag: str) -> TagRecord:
    """What CheckpointManager.save leaves on two nodes: node 0 holds the model states and rank 0's
    optimizer shard, node 1 rank 1's shard; each node uploads its own. Returns the nodes' records,
    merged."""
    write_tag(disks / "node-0", tag, [MODEL_STATES, optimizer_shard(0)])
    write_tag(disks / "node-1", tag, [optimizer_shard(1)])
    return TagRecord.merge([mirror.upload_tag(disks / "node-0", tag), mirror.upload_tag(disks / "node-1", tag)])


def tags_on_s3(mirror: CheckpointMirror) -> list[str]:
    return sorted({name.split("/")[0] for name in object_sizes(mirror.s3, mirror.uri)})


def test_a_fresh_disk_gets_the_published_tag_from_every_node_and_points_at_it(mirror, tmp_path):
    mirror.publish(save_on_two_nodes(mirror, tmp_path / "disks", "step-00000002"))
    fresh = tmp_path / "fresh" / "checkpoints"
    assert mirror.restore(fresh) == "step-00000002"
    assert CheckpointManager(fresh, settings={}).latest_tag() == "step-00000002"
    for node, name in (("node-0", MODEL_STATES), ("node-0", optimizer_shard(0)), ("node-1", optimizer_shard(1))):
        written = tmp_path / "disks" / node / "step-00000002" / name
        assert (fresh / "step-00000002" / name).read_bytes() == written.read_bytes()
    # The restored tag's record lists every node's files: this disk now holds them all.
    record = TagRecord.read(fresh / "step-00000002")
    assert sorted(record.files) == sorted([MODEL_STATES, optimizer_shard(0), optimizer_shard(1)])
    assert (record.step, record.settings) == (2, {"seed": 3})


@pytest.mark.parametrize("fault", ["killed before node 1 uploaded", "node 1's shard lost", "node 1's shard truncated"])
def test_a_tag_missing_a_ranks_shard_is_never_restored(mirror, tmp_path, fault):
    disks = tmp_path / "disks"
    mirror.publish(save_on_two_nodes(mirror, disks, "step-00000002"))
    missing = f"{mirror.uri}/step-00000004/{optimizer_shard(1)}"
    if fault == "killed before node 1 uploaded":
        write_tag(disks / "node-0", "step-00000004", [MODEL_STATES, optimizer_shard(0)])
        mirror.upload_tag(disks / "node-0", "step-00000004")
    else:
        reports = save_on_two_nodes(mirror, disks, "step-00000004")
        if fault == "node 1's shard lost":
            mirror.s3.remove_object(*parse_uri(missing))
        else:
            upload_bytes(mirror.s3, b"half a shard", missing)
        with pytest.raises(FileNotFoundError, match=f"step-00000004 is incomplete on S3.*{re.escape(missing)}"):
            mirror.publish(reports)

    fresh = tmp_path / "fresh" / "checkpoints"
    assert mirror.restore(fresh) == "step-00000002"
    assert sorted(p.name for p in fresh.iterdir()) == ["LATEST", "step-00000002"]
    assert sorted(p.name for p in (fresh / "step-00000002").iterdir()) == sorted(
        [MANIFEST, MODEL_STATES, optimizer_shard(0), optimizer_shard(1)])


def test_a_published_file_gone_from_s3_fails_the_restore_naming_it(mirror, tmp_path):
    mirror.publish(save_on_two_nodes(mirror, tmp_path / "disks", "step-00000002"))
    gone = f"{mirror.uri}/step-00000002/{optimizer_shard(1)}"
    mirror.s3.remove_object(*parse_uri(gone))
    with pytest.raises(FileNotFoundError, match=re.escape(f"LATEST.json lists step-00000002/{optimizer_shard(1)}, "
                                                          "which is gone from S3")):
        mirror.restore(tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "LATEST").exists()


def test_publishing_prunes_the_mirror_as_the_disks_are_pruned(mirror, tmp_path):
    disks = tmp_path / "disks"
    for step in (2, 4):
        mirror.publish(save_on_two_nodes(mirror, disks, f"step-{step:08d}"))
    # What a killed attempt had begun to upload beyond its last published tag.
    write_tag(disks / "node-0", "step-00000008", [MODEL_STATES])
    mirror.upload_tag(disks / "node-0", "step-00000008")
    mirror.publish(save_on_two_nodes(mirror, disks, "step-00000006"))
    assert tags_on_s3(mirror) == ["LATEST.json", "step-00000004", "step-00000006"]


def test_a_node_that_wrote_nothing_of_a_tag_uploads_nothing(mirror, tmp_path):
    """Without ZeRO, rank 0 writes the whole tag; DeepSpeed still makes the tag's folder on every
    node."""
    write_tag(tmp_path / "node-1", "step-00000002", [])
    assert mirror.upload_tag(tmp_path / "node-1", "step-00000002").files == {}
    assert object_sizes(mirror.s3, mirror.uri) == {}


def test_a_mirror_with_nothing_published_restores_nothing(mirror, tmp_path):
    save_on_two_nodes(mirror, tmp_path / "disks", "step-00000002")
    fresh = tmp_path / "fresh" / "checkpoints"
    assert mirror.restore(fresh) is None
    assert not fresh.exists()


def flip_a_byte_on_s3(mirror: CheckpointMirror, uri: str) -> None:
    """Replace the object with one of the same size, one bit changed (what a size check misses)."""
    data = bytearray(read_bytes(mirror.s3, uri))
    data[len(data) // 2] ^= 0x01
    upload_bytes(mirror.s3, bytes(data), uri)


def test_a_file_changed_on_s3_since_it_was_published_fails_the_restore_naming_it(mirror, tmp_path):
    mirror.publish(save_on_two_nodes(mirror, tmp_path / "disks", "step-00000002"))
    changed = f"{mirror.uri}/step-00000002/{optimizer_shard(1)}"
    flip_a_byte_on_s3(mirror, changed)
    with pytest.raises(CorruptCheckpoint, match=re.escape(f"{changed} does not match {mirror.uri}/{MIRROR_POINTER} "
                                                          f"(files.{optimizer_shard(1)}): sha256 is ")):
        mirror.restore(tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "LATEST").exists()


def test_a_pointer_without_hashes_is_refused_naming_the_field(mirror, tmp_path):
    """LATEST.json as the mirror wrote it before files had hashes: nothing to check them against."""
    save_on_two_nodes(mirror, tmp_path / "disks", "step-00000002")
    old = {"tag": "step-00000002", "step": 2, "settings": {}, "files": {MODEL_STATES: {"size": 2900}}}
    upload_bytes(mirror.s3, json.dumps(old).encode(), f"{mirror.uri}/{MIRROR_POINTER}")
    with pytest.raises(CorruptCheckpoint, match=re.escape(f"{mirror.uri}/{MIRROR_POINTER}: field "
                                                          f"files.{MODEL_STATES}.sha256 is missing")):
        mirror.restore(tmp_path / "fresh")


@pytest.mark.integration
def test_a_real_stage_mirrors_hashed_tags_and_a_changed_shard_is_never_restored(
        mirror, monkeypatch, trained, train_dataset, tmp_path, tracking):
    """A PIM stage under DeepSpeed mirrors its tags with their hashes; once a bit of its optimizer
    shard flips on S3, a fresh disk restores nothing."""
    monkeypatch.setenv(MIRROR_ENV, mirror.uri)
    run_stage(spec("pim", train_dataset, tmp_path / "out", vae=trained / "vae"), stop_after=2)
    published = mirror.latest()
    assert published.tag == "step-00000002" and published.settings["seed"] == 0
    on_disk = TagRecord.read(tmp_path / "out" / "checkpoints" / "step-00000002")
    assert published.files == on_disk.files and MANIFEST not in object_sizes(mirror.s3, f"{mirror.uri}/step-00000002")
    shard = next(name for name in published.files if name.endswith("optim_states.pt"))
    flip_a_byte_on_s3(mirror, f"{mirror.uri}/step-00000002/{shard}")
    with pytest.raises(CorruptCheckpoint, match=re.escape(f"step-00000002/{shard} does not match")):
        mirror.restore(tmp_path / "fresh" / "checkpoints")
    assert not (tmp_path / "fresh" / "checkpoints" / "LATEST").exists()
