"""Synthetic datasets for the tests: a folder of clips, or a throwaway git + DVC repository holding one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from interactavatar.config import preset
from interactavatar.data.synth import SynthSpec, synthesize
from interactavatar.data.versioning import make_versioned_dataset

TINY = SynthSpec.from_config(preset("tiny"))  # 88x88, 5 frames at 25 fps
DEMO = SynthSpec.from_config(preset("demo"))  # 176x176, 17 frames at 25 fps
DVC = str(Path(sys.executable).parent / "dvc")


def make_dataset(root: Path, num_clips: int, seed: int, spec: SynthSpec = TINY) -> Path:
    """`num_clips` synthetic clips of `seed` at `spec`'s size, written to `root`; returns `root`."""
    synthesize(root, num_clips=num_clips, seed=seed, spec=spec)
    return root


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def make_data_repo(root: Path, num_clips: int = 10) -> Path:
    """root/data-repo: a git repository whose DVC-tracked data/synth holds tiny-preset clips (seed 5)."""
    repo = root / "data-repo"
    make_versioned_dataset(repo, num_clips=num_clips, seed=5, spec=TINY)
    return repo


def make_data_repo_on_s3(root: Path, remote: str, env: dict[str, str], num_clips: int = 6) -> tuple[Path, str]:
    """make_data_repo's repository with its DVC remote `remote` (s3://..., the server in `env`), the
    data pushed there and the local DVC cache dropped, so a run must fetch it; (repo, revision)."""
    repo = make_data_repo(root, num_clips=num_clips)
    subprocess.run([DVC, "remote", "add", "-d", "minio", remote], cwd=repo, check=True, env=env)
    git(repo, "commit", "-qam", "remote")
    subprocess.run([DVC, "push", "-q"], cwd=repo, check=True, env=env)
    shutil.rmtree(repo / ".dvc" / "cache")
    return repo, git(repo, "rev-parse", "HEAD")
