"""Paths, discovery and lookups over the objects `kubectl kustomize` renders from k8s/."""

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUSTOMIZATIONS = sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))
OVERLAYS = [k for k in KUSTOMIZATIONS if k.startswith("overlays/")]


def find_kubectl() -> str | None:
    """$KUBECTL, then PATH, then the running interpreter's bin folder (a wheel-installed kubectl)."""
    candidates = [
        os.environ.get("KUBECTL"),
        shutil.which("kubectl"),
        str(Path(sys.prefix) / "bin" / "kubectl"),
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def find(objects, kind, name=None, namespace=None):
    return [
        o
        for o in objects
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def one(objects, kind, name=None, namespace=None) -> dict:
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {namespace}/{name}, found {len(found)}"
    return found[0]
