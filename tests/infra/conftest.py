"""Builds of the kustomizations in k8s/, shared by the infra tests.

The builds run on a copy of k8s/ whose secrets/*.env files are made from the committed
*.env.example files, exactly as docs/cluster.md ("2. Credentials") tells an operator to do (with real values).
"""

import functools
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers.k8s_manifests import K8S, find_kubectl


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = find_kubectl()
    if path is None:
        pytest.fail(
            "kubectl not found ($KUBECTL, PATH, or the venv's bin): the k8s/ manifests cannot be built. "
            "Install a kubectl >= 1.27 (kustomize v5), e.g. from the Kubernetes apt repository, and rerun; "
            "Debian's own kubernetes-client package is too old for these kustomizations."
        )
    return path


@pytest.fixture(scope="session")
def k8s_tree(tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.env"))
    for example in (tree / "secrets").glob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    return tree


@pytest.fixture(scope="session")
def build(kubectl, k8s_tree):
    """build("overlays/gpu") -> the list of objects `kubectl kustomize` renders there."""

    @functools.cache
    def _build(kustomization: str) -> tuple[dict, ...]:
        done = subprocess.run(
            [kubectl, "kustomize", str(k8s_tree / kustomization)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{done.stderr}"
        return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)

    return _build
