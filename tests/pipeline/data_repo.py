"""A throwaway git + DVC repository holding a tiny synthetic dataset, for the pipeline tests."""

import os
import subprocess
import sys
from pathlib import Path

from interactavatar.data.synth import SynthSpec, synthesize

DVC = str(Path(sys.executable).parent / "dvc")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def make_data_repo(root: Path, num_clips: int = 10) -> Path:
    """A git repository whose DVC-tracked data/synth holds a tiny-preset synthetic dataset."""
    repo = root / "data-repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "ci@example.invalid")
    git(repo, "config", "user.name", "ci")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([DVC, "init", "-q"], cwd=repo, check=True, env=env)
    synthesize(repo / "data" / "synth", num_clips=num_clips, seed=5, spec=SynthSpec(width=64, height=64, num_frames=5))
    subprocess.run([DVC, "add", "-q", "data/synth"], cwd=repo, check=True, env=env)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data v1")
    return repo

