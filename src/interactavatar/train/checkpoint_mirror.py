"""A stage's checkpoints mirrored on S3, so that a multi-node job whose nodes come back on fresh
disks (preemption, node failure, a retried TrainJob) resumes instead of training from step 0.

Under the mirror's prefix:

    step-00000040/...   a DeepSpeed tag: every node's files of it, as they lie on its disk
    LATEST.json         the tag's record (`integrity.TagRecord`): {"tag", "step", "settings",
                        "files": {"<file>": {"size", "sha256"}, ...}}, every node's files

Every node uploads the files its ranks wrote, and reports their records (each node's MANIFEST.json,
which is not uploaded: each node's lists its own files); only once each file is on S3 with its size
does `LATEST.json` move to the tag, in one PUT. A restore reads `LATEST.json`, downloads exactly the
files it lists and checks each one's size and sha256, so a tag cut short mid-upload (or missing a
rank's shard), or a file changed on S3 since, is never handed to DeepSpeed. The restored tag's
MANIFEST.json is that record: the disk now holds every node's files.

The hashes catch damage, not an attacker who can write the prefix (and so LATEST.json): what keeps
such a file from running code is that checkpoints are unpickled with weights_only=True
(`checkpoint_io`).
"""

from __future__ import annotations

from pathlib import Path

from interactavatar.io.files import write_bytes_atomic, write_text_atomic
from interactavatar.io.storage import (
    client,
    download_file,
    object_sizes,
    read_bytes,
    remove_prefix,
    upload_bytes,
    upload_folder,
)
from interactavatar.train.checkpoint import POINTER, TAG_PREFIX, stale_tags
from interactavatar.train.integrity import MANIFEST, CorruptCheckpoint, TagRecord, mismatch

MIRROR_POINTER = "LATEST.json"


class CheckpointMirror:
    def __init__(self, uri: str, keep: int = 2):
        self.uri = uri.rstrip("/")
        self.keep = keep
        self.s3 = client()

    def upload_tag(self, directory: str | Path, tag: str) -> TagRecord | None:
        """Upload the files of `tag` on this node's disk; returns their record (this node's
        MANIFEST.json). It may list none: without ZeRO, rank 0 writes the whole tag. None when no
        rank of this node wrote the tag."""
        folder = Path(directory) / tag
        if not folder.is_dir():
            return None
        record = TagRecord.read(folder)
        upload_folder(self.s3, folder, f"{self.uri}/{tag}", exclude=(MANIFEST,))
        return record

    def publish(self, record: TagRecord) -> None:
        """Point LATEST.json at `record` (all nodes' files) once every one of its files is on S3
        with its size, then prune the mirror as the disks are pruned."""
        tag = record.tag
        on_s3 = object_sizes(self.s3, f"{self.uri}/{tag}")
        missing = [f"{self.uri}/{tag}/{name} ({entry.size} bytes; on S3: {on_s3.get(name, 'none')})"
                   for name, entry in sorted(record.files.items()) if on_s3.get(name) != entry.size]
        if missing:
            raise FileNotFoundError(f"checkpoint mirror: {tag} is incomplete on S3, so {self.uri}/{MIRROR_POINTER} "
                                    f"stays where it was; missing or truncated: {', '.join(missing)}")
        upload_bytes(self.s3, record.to_json().encode(), f"{self.uri}/{MIRROR_POINTER}")
        self._prune(tag)

    def latest(self) -> TagRecord | None:
        """The published tag's record, or None when no tag was published yet."""
        try:
            text = read_bytes(self.s3, f"{self.uri}/{MIRROR_POINTER}")
        except FileNotFoundError:
            return None
        return TagRecord.from_json(text, f"{self.uri}/{MIRROR_POINTER}")

    def restore(self, directory: str | Path) -> str | None:
        """Download the published tag into `directory`, check every file against its record, and
        point its LATEST at it; returns the tag, or None when the mirror holds none (training starts
        from step 0).

        The whole tag, every rank's files: each rank loads the model states that node 0 wrote,
        and which ranks this node will hold is settled by torchrun's rendezvous, after this."""
        directory = Path(directory)
        record = self.latest()
        if record is None:
            return None
        folder = directory / record.tag
        pointer = f"{self.uri}/{MIRROR_POINTER}"
        for name, entry in sorted(record.files.items()):
            uri = f"{self.uri}/{record.tag}/{name}"
            try:
                path = download_file(self.s3, uri, folder / name)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"checkpoint mirror: {pointer} lists {record.tag}/{name}, which is "
                                        "gone from S3") from err
            if (reason := mismatch(path, entry)) is not None:
                raise CorruptCheckpoint(f"checkpoint mirror: {uri} does not match {pointer} (files.{name}): {reason}")
        # The record and then the pointer last: a restore cut short never points at a
        # half-downloaded tag.
        write_text_atomic(folder / MANIFEST, record.to_json())
        write_bytes_atomic(directory / POINTER, record.tag.encode())
        return record.tag

    def _prune(self, current: str) -> None:
        tags = {name.split("/", 1)[0] for name in object_sizes(self.s3, self.uri)
                if name.startswith(TAG_PREFIX) and "/" in name}
        for tag in stale_tags(tags, current, self.keep):
            remove_prefix(self.s3, f"{self.uri}/{tag}")
