"""dvc.yaml seen from a fresh clone: `dvc repro --dry` lists both dataset stages without failing
(DVC 3.67 hashes a later stage's missing dependencies even in a dry run: dvc.yaml keeps each
dataset's making and validation in one stage for that reason), and leaves the clone clean.
The full `dvc repro`, the README's commit step and push/pull run in test_storage_dvc.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.repo_state import DVC, run_tool, tool_environment


@pytest.mark.slow
def test_dry_run_on_a_fresh_clone_lists_both_stages(repo_state: Path, tmp_path: Path):
    env = tool_environment(tmp_path)
    clone = tmp_path / "clone"
    run_tool(["git", "clone", "-q", str(repo_state), str(clone)], tmp_path, env)

    planned = run_tool([DVC, "repro", "--dry"], clone, env)

    assert "Running stage 'synth'" in planned and "Running stage 'ingest'" in planned
    assert "interactavatar data ingest --videos data/raw-example --out data/real" in planned
    assert planned.count("interactavatar data validate") == 2
    assert run_tool(["git", "status", "--porcelain", "--untracked-files=all"], clone, env) == ""
    assert not (clone / "data" / "synth").exists(), "a dry run makes nothing"
