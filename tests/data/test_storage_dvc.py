"""S3 artifacts (storage.py) and DVC versioning against a real S3 server on loopback."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers.repo_state import DVC, run_tool, tool_environment

from interactavatar.data.schema import read_manifest
from interactavatar.io import storage


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_settings_from_environment():
    settings = storage.S3Settings.from_env({"AWS_ENDPOINT_URL": "https://minio.example:9000",
                                            "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert (settings.endpoint, settings.secure, settings.access_key, settings.secret_key) == (
        "minio.example:9000", True, "k", "s")
    settings = storage.S3Settings.from_env({"MINIO_ENDPOINT": "minio:9000", "MINIO_ACCESS_KEY": "a",
                                            "MINIO_SECRET_KEY": "b", "AWS_REGION": "eu-west-1"})
    assert (settings.endpoint, settings.secure, settings.region) == ("minio:9000", False, "eu-west-1")
    with pytest.raises(ValueError, match="AWS_ENDPOINT_URL"):
        storage.S3Settings.from_env({})
    with pytest.raises(ValueError, match="not http"):
        storage.S3Settings.from_env({"AWS_ENDPOINT_URL": "ftp://x"})


def test_uris():
    assert storage.parse_uri("s3://dvc/a/b.txt") == ("dvc", "a/b.txt")
    assert storage.parse_uri("s3://models") == ("models", "")
    assert storage.s3_uri("models", "/x/y") == "s3://models/x/y"
    with pytest.raises(ValueError, match="not an s3://"):
        storage.parse_uri("/local/path")


@pytest.mark.integration
def test_folder_round_trip(s3_server, demo_dataset, tmp_path):
    s3 = storage.client(storage.S3Settings.from_env(s3_server.env()))
    assert storage.ensure_bucket(s3, "artifacts") is True
    assert storage.ensure_bucket(s3, "artifacts") is False
    keys = storage.upload_folder(s3, demo_dataset, "s3://artifacts/datasets/demo")
    assert "datasets/demo/manifest.jsonl" in keys
    target = tmp_path / "pulled"
    storage.download_folder(s3, "s3://artifacts/datasets/demo", target)
    assert _digests(target) == _digests(demo_dataset)
    assert not [p for p in target.rglob("*.tmp*")], "downloads leave no temporary files"
    with pytest.raises(FileNotFoundError, match="nothing under"):
        storage.download_folder(s3, "s3://artifacts/datasets/none", tmp_path / "none")


# The README's commit step after `dvc repro`: everything the stages write is then committed,
# DVC-tracked (data/.gitignore) or ignored (gx/uncommitted/, by gx/.gitignore).
COMMIT_STEP = ["git", "add", "dvc.lock", "data/.gitignore", "reports", "gx"]


@pytest.mark.integration
def test_dvc_repro_commit_push_pull_through_s3(s3_server, repo_state, tmp_path):
    """The repository's own dvc.yaml, params.yaml, .dvc/config and gx/, in a scratch git repo."""
    repo = repo_state
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["synth"] |= {"num_clips": 3, "width": 64, "height": 64, "num_frames": 5}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = tool_environment(tmp_path)
    run_tool(["git", "commit", "-qam", "params: a small synthetic set"], repo, env)
    s3 = storage.client(storage.S3Settings.from_env(s3_server.env()))
    bucket, _ = storage.parse_uri(_remote_url(repo))
    storage.ensure_bucket(s3, bucket)
    # Endpoint and keys from the environment, as in a pipeline pod; never in a committed file.
    env |= s3_server.env()

    run_tool([DVC, "repro"], repo, env)
    for name, clips in (("synth", 3), ("real", 2)):
        summary = json.loads((repo / "reports" / f"{name}-validation.json").read_text())
        assert (summary["success"], summary["num_clips"]) == (True, clips)
        assert summary["dataset"] == f"../data/{name}", "a metric file records paths relative to itself"
        assert list((repo / "gx" / "uncommitted" / "validations" / "clip_dataset" / name).rglob("*.json"))
    pushed = _digests(repo / "data" / "synth")
    assert len([name for name in pushed if name.endswith("video.mp4")]) == 3
    assert len(read_manifest(repo / "data" / "real")) == 2

    run_tool(COMMIT_STEP, repo, env)
    run_tool(["git", "commit", "-qm", "data: 3 synthetic clips, 2 example clips"], repo, env)
    assert run_tool(["git", "status", "--porcelain", "--untracked-files=all"], repo, env) == "", \
        "the commit step leaves nothing the stages wrote uncommitted"
    run_tool([DVC, "push"], repo, env)

    shutil.rmtree(repo / "data" / "synth")
    shutil.rmtree(repo / ".dvc" / "cache")
    run_tool([DVC, "pull"], repo, env)
    assert _digests(repo / "data" / "synth") == pushed
    # Running the code writes bytecode beside it; .dvcignore keeps that from invalidating synth.
    (repo / "src" / "interactavatar" / "data" / "__pycache__").mkdir(exist_ok=True)
    (repo / "src" / "interactavatar" / "data" / "__pycache__" / "synth.cpython-311.pyc").write_bytes(b"x")
    assert "up to date" in run_tool([DVC, "status"], repo, env).lower()

    committed = (repo / ".dvc" / "config").read_text() + (repo / "dvc.lock").read_text()
    assert s3_server.secret_key not in committed and s3_server.access_key not in committed
    assert s3_server.endpoint not in committed


def _remote_url(repo: Path) -> str:
    for line in (repo / ".dvc" / "config").read_text().splitlines():
        if line.strip().startswith("url ="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("no remote url in .dvc/config")
