"""A stage's checkpoints mirrored on S3, so that a multi-node job whose nodes come back on fresh
disks (preemption, node failure, a retried TrainJob) resumes instead of training from step 0.

Under the mirror's prefix:

    step-00000040/...   a DeepSpeed tag: every node's files of it, as they lie on its disk
    LATEST.json         {"tag": "step-00000040", "files": {"step-00000040/<file>": size, ...}}

Every node uploads the files its ranks wrote; only once each of them is on S3 with its size does
`LATEST.json` move to the tag, in one PUT. A restore reads `LATEST.json` and downloads exactly the
files it lists, so a tag cut short mid-upload (or missing a rank's shard) is never handed to
DeepSpeed: the previous complete one is.
"""

from __future__ import annotations

import json
from pathlib import Path

from interactavatar.io.files import write_bytes_atomic
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

MIRROR_POINTER = "LATEST.json"


class CheckpointMirror:
    def __init__(self, uri: str, keep: int = 2):
        self.uri = uri.rstrip("/")
        self.keep = keep
        self.s3 = client()

    def upload_tag(self, directory: str | Path, tag: str) -> dict[str, int]:
        """Upload the files of `tag` on this node's disk; returns {<tag>/<file>: size}. It may be
        none: without ZeRO, rank 0 writes the whole tag."""
        folder = Path(directory) / tag
        if not folder.is_dir():  # a node none of whose ranks wrote a file of the tag
            return {}
        upload_folder(self.s3, folder, f"{self.uri}/{tag}")
        return {f"{tag}/{path.relative_to(folder).as_posix()}": path.stat().st_size
                for path in folder.rglob("*") if path.is_file()}

    def publish(self, tag: str, files: dict[str, int]) -> None:
        """Point LATEST.json at `tag` once every one of `files` (all nodes' uploads) is on S3 with
        its size, then prune the mirror as the disks are pruned."""
        on_s3 = {f"{tag}/{name}": size for name, size in object_sizes(self.s3, f"{self.uri}/{tag}").items()}
        missing = [f"{self.uri}/{name} ({size} bytes; on S3: {on_s3.get(name, 'none')})"
                   for name, size in sorted(files.items()) if on_s3.get(name) != size]
        if missing:
            raise FileNotFoundError(f"checkpoint mirror: {tag} is incomplete on S3, so {self.uri}/{MIRROR_POINTER} "
                                    f"stays where it was; missing or truncated: {', '.join(missing)}")
        upload_bytes(self.s3, json.dumps({"tag": tag, "files": files}, sort_keys=True).encode(),
                     f"{self.uri}/{MIRROR_POINTER}")
        self._prune(tag)

    def latest(self) -> dict | None:
        """The pointer's {"tag", "files"}, or None when no tag was published yet."""
        try:
            return json.loads(read_bytes(self.s3, f"{self.uri}/{MIRROR_POINTER}"))
        except FileNotFoundError:
            return None

    def restore(self, directory: str | Path) -> str | None:
        """Download the published tag into `directory` and point its LATEST at it; returns the tag,
        or None when the mirror holds none (training starts from step 0).

        The whole tag, every rank's files: each rank loads the model states that node 0 wrote,
        and which ranks this node will hold is settled by torchrun's rendezvous, after this."""
        directory = Path(directory)
        latest = self.latest()
        if latest is None:
            return None
        for name, size in latest["files"].items():
            try:
                path = download_file(self.s3, f"{self.uri}/{name}", directory / name)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"checkpoint mirror: {self.uri}/{MIRROR_POINTER} lists {name}, which is "
                                        f"gone from S3") from err
            if path.stat().st_size != size:
                raise ValueError(f"checkpoint mirror: {self.uri}/{name} has {path.stat().st_size} bytes, "
                                 f"{self.uri}/{MIRROR_POINTER} says {size}")
        # The pointer last: a restore cut short never points at a half-downloaded tag.
        write_bytes_atomic(directory / POINTER, latest["tag"].encode())
        return latest["tag"]

    def _prune(self, current: str) -> None:
        tags = {name.split("/", 1)[0] for name in object_sizes(self.s3, self.uri)
                if name.startswith(TAG_PREFIX) and "/" in name}
        for tag in stale_tags(tags, current, self.keep):
            remove_prefix(self.s3, f"{self.uri}/{tag}")
