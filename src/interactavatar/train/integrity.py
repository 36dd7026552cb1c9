"""Integrity records of checkpoint tags: each file's size and sha256, checked before any of the
tag's files is unpickled.

A bit flipped on a disk, a file cut short by a full disk or a bad copy, or one replaced on the S3
mirror, otherwise resumes training silently from wrong weights (DeepSpeed checks nothing). So once
a tag's files are written, each node's first process hashes the files on its disk, flushes them to
the disk on the way, and records them with the tag's step and the settings that trained it
(`train.resume`) in `<tag>/MANIFEST.json`, before the `LATEST` pointer moves to the tag. A restore
recomputes the hashes; a tag that does not match is not loaded (`CheckpointManager` falls back to
the previous one). The mirror publishes the union of every node's records as its pointer, and
checks each downloaded file against it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from interactavatar.io.files import fsync_directory, write_text_atomic

MANIFEST = "MANIFEST.json"
CHUNK = 1 << 20
SHA256 = re.compile(r"[0-9a-f]{64}")


class CorruptCheckpoint(ValueError):
    """A tag whose files or record do not hold what was written (a ValueError: the CLI reports it
    as a refusal, in one line)."""


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


@dataclass
class TagRecord:
    """What a tag holds: its files (paths relative to the tag's folder), its step, and the settings
    that trained it."""

    tag: str
    step: int
    settings: dict
    files: dict[str, FileRecord] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> TagRecord:
        """Parse a record; errors name `source` (the file or object) and the field at fault."""
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CorruptCheckpoint(f"{source}: not a tag record (invalid JSON: {err})") from err

        def get(obj, key: str, kind: type, where: str):
            if not isinstance(obj, dict) or key not in obj:
                raise CorruptCheckpoint(f"{source}: field {where} is missing")
            value = obj[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise CorruptCheckpoint(f"{source}: field {where} is {value!r}, expected {kind.__name__}")
            return value

        files = {}
        for name, entry in get(raw, "files", dict, "files").items():
            size = get(entry, "size", int, f"files.{name}.size")
            digest = get(entry, "sha256", str, f"files.{name}.sha256")
            if not SHA256.fullmatch(digest):
                raise CorruptCheckpoint(f"{source}: field files.{name}.sha256 is {digest!r}, not a sha256")
            files[name] = FileRecord(size, digest)
        return cls(get(raw, "tag", str, "tag"), get(raw, "step", int, "step"), get(raw, "settings", dict, "settings"),
                   files)

    @classmethod
    def read(cls, folder: str | Path) -> TagRecord:
        """The record in a tag's folder."""
        path = Path(folder) / MANIFEST
        try:
            text = path.read_bytes()
        except FileNotFoundError as err:
            raise CorruptCheckpoint(f"{path}: missing (the tag was never completed, or was written before "
                                    "checkpoints were recorded)") from err
        return cls.from_json(text, str(path))

    @classmethod
    def merge(cls, records: list[TagRecord]) -> TagRecord:
        """One record of the files that several nodes recorded of the same tag."""
        first = records[0]
        return cls(first.tag, first.step, first.settings,
                   {name: entry for record in records for name, entry in sorted(record.files.items())})


def hash_file(path: str | Path, sync: bool = False) -> FileRecord:
    """Size and sha256 of a file; `sync` also flushes it to the disk (one pass over its bytes)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(handle.fileno())
    return FileRecord(size, digest.hexdigest())


def record_tag(folder: str | Path, tag: str, step: int, settings: dict) -> TagRecord:
    """Hash and flush every file in a tag's folder on this disk, and write its record there."""
    folder = Path(folder)
    files = {path.relative_to(folder).as_posix(): hash_file(path, sync=True)
             for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST}
    fsync_directory(folder)
    record = TagRecord(tag, step, settings, files)
    write_text_atomic(folder / MANIFEST, record.to_json())
    return record


def mismatch(path: Path, expected: FileRecord) -> str | None:
    """Why `path` is not the file `expected` records ("missing", its size or its sha256), or None
    when it is."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != expected.size:
        return f"size is {size} bytes, the record says {expected.size}"
    actual = hash_file(path).sha256
    if actual != expected.sha256:
        return f"sha256 is {actual}, the record says {expected.sha256}"
    return None


def verify_tag(folder: str | Path) -> tuple[TagRecord | None, list[str]]:
    """(the tag's record, what is wrong with the tag on this disk: empty when every recorded file
    matches). A file on the disk that the record does not list is not an error: it is never loaded
    (`checkpoint_io.VerifiedCheckpointEngine` loads recorded files only)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None, [f"{folder}: missing"]
    try:
        record = TagRecord.read(folder)
    except CorruptCheckpoint as err:
        return None, [str(err)]
    if record.tag != folder.name:
        return None, [f"{folder / MANIFEST}: field tag is {record.tag!r}, but the folder is {folder.name!r}"]
    problems = [f"{folder / name}: {reason}" for name, entry in sorted(record.files.items())
                if (reason := mismatch(folder / name, entry)) is not None]
    return record, problems
