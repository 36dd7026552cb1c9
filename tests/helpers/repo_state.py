"""The repository as it stands, committed in a scratch git repository, and running git, dvc and
interactavatar there: how the DVC tests see dvc.yaml, params.yaml, .dvc/ and gx/ as a fresh clone
would, without ever writing to the working tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).parent / "dvc")
IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def tool_environment(scratch: Path) -> dict[str, str]:
    """This venv's tools first on PATH, a git identity, no DVC analytics, DVC's site cache under
    `scratch`, and no S3 settings (a test that needs them adds its server's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return env | IDENTITY | {"PATH": f"{Path(sys.executable).parent}:{env['PATH']}", "DVC_NO_ANALYTICS": "1",
                             "DVC_SITE_CACHE_DIR": str(scratch / "dvc-site-cache")}


def run_tool(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command; fail with its output when it fails; return its stdout."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} (in {cwd})\n{result.stdout}\n{result.stderr}"
    return result.stdout


def commit_repository_state(target: Path, env: dict[str, str]) -> Path:
    """Copy the repository's files as a commit would take them now (tracked ones, and untracked ones
    git does not ignore) to `target`, and commit them there in a new git repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is listed too
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "the repository now"]):
        run_tool(command, target, env)
    return target
