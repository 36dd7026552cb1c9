"""S3 artifacts (storage.py) and DVC versioning against a real S3 server on loopback."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from interactavatar.io import storage

REPO = Path(__file__).resolve().parents[2]


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


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.integration
def test_dvc_repro_push_pull_through_s3(s3_server, tmp_path):
    """The repository's own dvc.yaml, params.yaml and .dvc/config, in a scratch git repo."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    for part in ("data", "io"):
        shutil.copytree(REPO / "src" / "interactavatar" / part, repo / "src" / "interactavatar" / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["synth"] |= {"num_clips": 3, "width": 64, "height": 64, "num_frames": 5}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t"}
    dvc = [str(Path(sys.executable).parent / "dvc")]
    _run(["git", "init", "-q"], repo, env)
    s3 = storage.client(storage.S3Settings.from_env(s3_server.env()))
    bucket, _ = storage.parse_uri(_remote_url(repo))
    storage.ensure_bucket(s3, bucket)
    # Endpoint and keys from the environment, as in a pipeline pod; never in a committed file.
    env |= s3_server.env() | {"DVC_SITE_CACHE_DIR": str(tmp_path / "site-cache")}

    _run([*dvc, "repro"], repo, env)
    assert (repo / "reports" / "data-validation.json").exists()
    assert '"success": true' in (repo / "reports" / "data-validation.json").read_text()
    pushed = _digests(repo / "data" / "synth")
    assert len([name for name in pushed if name.endswith("video.mp4")]) == 3
    _run([*dvc, "push"], repo, env)

    shutil.rmtree(repo / "data" / "synth")
    shutil.rmtree(repo / ".dvc" / "cache")
    _run([*dvc, "pull"], repo, env)
    assert _digests(repo / "data" / "synth") == pushed
    # Running the code writes bytecode beside it; .dvcignore keeps that from invalidating synth.
    (repo / "src" / "interactavatar" / "data" / "__pycache__").mkdir(exist_ok=True)
    (repo / "src" / "interactavatar" / "data" / "__pycache__" / "synth.cpython-311.pyc").write_bytes(b"x")
    assert "up to date" in _run([*dvc, "status"], repo, env).lower()

    committed = (repo / ".dvc" / "config").read_text() + (repo / "dvc.lock").read_text()
    assert s3_server.secret_key not in committed and s3_server.access_key not in committed
    assert s3_server.endpoint not in committed


def _remote_url(repo: Path) -> str:
    for line in (repo / ".dvc" / "config").read_text().splitlines():
        if line.strip().startswith("url ="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("no remote url in .dvc/config")
