"""Datasets under version control: the content hash and git revision a model is tagged with, fetching
a DVC-tracked dataset at a revision, making a versioned dataset (git + DVC) from synthetic clips,
as the demo, the tests and the benchmarks do, and the form of a path recorded in a versioned file."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from interactavatar.data.schema import dataset_files


def portable_path(path: str | Path, folder: str | Path) -> str:
    """`path` relative to `folder` (POSIX separators), as a metrics file in `folder` records it.

    Metrics and reports are committed (DVC metrics, cache: false): an absolute path would differ
    between two clones of the same commit, and `dvc metrics diff` would show the checkout's
    location instead of a change."""
    return Path(os.path.relpath(Path(path).absolute(), Path(folder).absolute())).as_posix()


def dataset_hash(root: str | Path) -> str:
    """sha256 over exactly the bytes training reads (`schema.dataset_files`): each file once, in
    sorted order of its path relative to the dataset, as that path and the file's own sha256, so
    no two different datasets frame to the same stream. Files nothing reads (notes, reports, clips
    the manifest does not list) do not count."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in dataset_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + _file_digest(path) + b"\n")
    return digest.hexdigest()


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def data_revision(root: str | Path) -> str:
    """The git revision of the repository holding the dataset's DVC pointer, or "unversioned"."""
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10)
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        return "unversioned"
    return result.stdout.strip()


def fetch_dataset(repo: str, rev: str, path: str, destination: str | Path) -> str:
    """Materialise the dataset `path` of git+DVC repository `repo` at `rev` into `destination`.

    Returns the resolved git revision (the lineage tag every later step carries). The files come
    from the DVC cache or remote (S3 settings from the environment), as `dvc get` would fetch them.
    """
    from dvc.api import DVCFileSystem

    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    try:
        fs = DVCFileSystem(repo, rev=rev or None)
        if not fs.exists(path):
            raise FileNotFoundError(f"{repo}@{rev or 'HEAD'}: no dataset at {path!r}")
        fs.get(path, str(destination), recursive=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # DVC raises many kinds: name the repository, revision and path
        raise ValueError(f"{repo}@{rev or 'HEAD'}:{path}: could not fetch the dataset ({err})") from err
    return resolve_revision(repo, rev)


def resolve_revision(repo: str, rev: str) -> str:
    """The full commit id of `rev` (HEAD when empty) in a local repository; `rev` itself otherwise."""
    if not Path(repo).is_dir():
        return rev or "HEAD"
    result = subprocess.run(["git", "-C", repo, "rev-parse", rev or "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else rev or "HEAD"


DATA_PATH = "data/synth"


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} (in {cwd}) failed:\n{result.stdout}{result.stderr}")
    return result.stdout.strip()


def make_versioned_dataset(repo: str | Path, num_clips: int, seed: int, spec, remote: str | Path | None = None,
                           message: str | None = None) -> str:
    """A git repository at `repo` whose DATA_PATH holds `num_clips` synthetic clips (`spec`: a
    `data.synth.SynthSpec`) tracked by DVC, committed, and pushed to the DVC remote folder `remote`
    when one is given. Returns the data revision (the commit). A repository already made is reused."""
    from interactavatar.data.synth import synthesize

    repo = Path(repo)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(sys.executable).parent / "dvc")
    if not (repo / f"{DATA_PATH}.dvc").is_file():
        repo.mkdir(parents=True, exist_ok=True)
        _run(["git", "init", "-q"], repo, env)
        _run(["git", "config", "user.email", "data@interactavatar.invalid"], repo, env)
        _run(["git", "config", "user.name", "interactavatar data"], repo, env)
        _run([dvc, "init", "-q"], repo, env)
        if remote is not None:
            _run([dvc, "remote", "add", "-d", "local", str(Path(remote).resolve())], repo, env)
        synthesize(repo / DATA_PATH, num_clips, seed, spec)
        return commit_dataset(repo, message or f"data: {num_clips} synthetic clips, seed {seed}", push=remote is not None)
    return _run(["git", "rev-parse", "HEAD"], repo, env)


def commit_dataset(repo: str | Path, message: str, push: bool = True) -> str:
    """What a data engineer runs after changing DATA_PATH: `dvc add`, `git add -A`, `git commit`,
    and `dvc push` to the default remote. Returns the new data revision (the commit)."""
    repo, env = Path(repo), {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(sys.executable).parent / "dvc")
    _run([dvc, "add", "-q", DATA_PATH], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", message], repo, env)
    if push:
        _run([dvc, "push", "-q"], repo, env)
    return _run(["git", "rev-parse", "HEAD"], repo, env)
