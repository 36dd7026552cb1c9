"""The checkpoint mirror on a real S3 server (SeaweedFS on loopback): what a node that comes back on
a fresh disk restores. The files stand in for DeepSpeed's (named as ZeRO-2 names them on two ranks,
one rank per node; any contents); tests/pipeline/test_trainjob.py mirrors real ones."""

import re

import pytest

from interactavatar.io.storage import client, ensure_bucket, object_sizes, parse_uri, upload_bytes
from interactavatar.train.checkpoint import CheckpointManager
from interactavatar.train.checkpoint_mirror import CheckpointMirror

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
    (disk / tag).mkdir(parents=True, exist_ok=True)
    for name in names:
        (disk / tag / name).write_bytes(f"{tag}/{name} ".encode() * 100)


def save_on_two_nodes(mirror: CheckpointMirror, disks, tag: str) -> dict[str, int]:
    """What CheckpointManager.save leaves on two nodes: node 0 holds the model states and rank 0's
    optimizer shard, node 1 rank 1's shard; each node uploads its own. Returns the nodes' reports."""
    write_tag(disks / "node-0", tag, [MODEL_STATES, optimizer_shard(0)])
    write_tag(disks / "node-1", tag, [optimizer_shard(1)])
    return mirror.upload_tag(disks / "node-0", tag) | mirror.upload_tag(disks / "node-1", tag)


def tags_on_s3(mirror: CheckpointMirror) -> list[str]:
    return sorted({name.split("/")[0] for name in object_sizes(mirror.s3, mirror.uri)})


def test_a_fresh_disk_gets_the_published_tag_from_every_node_and_points_at_it(mirror, tmp_path):
    mirror.publish("step-00000002", save_on_two_nodes(mirror, tmp_path / "disks", "step-00000002"))
    fresh = tmp_path / "fresh" / "checkpoints"
    assert mirror.restore(fresh) == "step-00000002"
    assert CheckpointManager(fresh).latest_tag() == "step-00000002"
    for node, name in (("node-0", MODEL_STATES), ("node-0", optimizer_shard(0)), ("node-1", optimizer_shard(1))):
        written = tmp_path / "disks" / node / "step-00000002" / name
        assert (fresh / "step-00000002" / name).read_bytes() == written.read_bytes()


@pytest.mark.parametrize("fault", ["killed before node 1 uploaded", "node 1's shard lost", "node 1's shard truncated"])
def test_a_tag_missing_a_ranks_shard_is_never_restored(mirror, tmp_path, fault):
    disks = tmp_path / "disks"
    mirror.publish("step-00000002", save_on_two_nodes(mirror, disks, "step-00000002"))
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
            mirror.publish("step-00000004", reports)

    fresh = tmp_path / "fresh" / "checkpoints"
    assert mirror.restore(fresh) == "step-00000002"
    assert sorted(p.name for p in fresh.iterdir()) == ["LATEST", "step-00000002"]
    assert sorted(p.name for p in (fresh / "step-00000002").iterdir()) == sorted(
        [MODEL_STATES, optimizer_shard(0), optimizer_shard(1)])


def test_a_published_file_gone_from_s3_fails_the_restore_naming_it(mirror, tmp_path):
    mirror.publish("step-00000002", save_on_two_nodes(mirror, tmp_path / "disks", "step-00000002"))
    gone = f"{mirror.uri}/step-00000002/{optimizer_shard(1)}"
    mirror.s3.remove_object(*parse_uri(gone))
    with pytest.raises(FileNotFoundError, match=re.escape(f"LATEST.json lists step-00000002/{optimizer_shard(1)}, "
                                                          "which is gone from S3")):
        mirror.restore(tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "LATEST").exists()


def test_publishing_prunes_the_mirror_as_the_disks_are_pruned(mirror, tmp_path):
    disks = tmp_path / "disks"
    for step in (2, 4):
        mirror.publish(f"step-{step:08d}", save_on_two_nodes(mirror, disks, f"step-{step:08d}"))
    # What a killed attempt had begun to upload beyond its last published tag.
    write_tag(disks / "node-0", "step-00000008", [MODEL_STATES])
    mirror.upload_tag(disks / "node-0", "step-00000008")
    mirror.publish("step-00000006", save_on_two_nodes(mirror, disks, "step-00000006"))
    assert tags_on_s3(mirror) == ["LATEST.json", "step-00000004", "step-00000006"]


def test_a_node_that_wrote_nothing_of_a_tag_uploads_nothing(mirror, tmp_path):
    """Without ZeRO, rank 0 writes the whole tag; DeepSpeed still makes the tag's folder on every
    node."""
    (tmp_path / "node-1" / "step-00000002").mkdir(parents=True)
    assert mirror.upload_tag(tmp_path / "node-1", "step-00000002") == {}


def test_a_mirror_with_nothing_published_restores_nothing(mirror, tmp_path):
    save_on_two_nodes(mirror, tmp_path / "disks", "step-00000002")
    fresh = tmp_path / "fresh" / "checkpoints"
    assert mirror.restore(fresh) is None
    assert not fresh.exists()
