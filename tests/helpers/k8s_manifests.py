"""Paths, discovery and lookups over the objects `kubectl kustomize` renders from k8s/."""

import os
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUSTOMIZATIONS = sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))
OVERLAYS = [k for k in KUSTOMIZATIONS if k.startswith("overlays/")]
# A name with one of these words (split at _ - .) names a secret: an env file's key, an env var.
SECRET_WORDS = {"KEY", "SECRET", "PASSWORD", "TOKEN", "CREDENTIALS"}
# Kubeflow Trainer runtimes: their pods' template sits in a JobSet's replicated Jobs.
TRAINING_RUNTIMES = {"ClusterTrainingRuntime", "TrainingRuntime"}


def is_secret_name(name: str) -> bool:
    return bool(SECRET_WORDS & set(re.split(r"[_\-.]", name.upper())))


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


def runtime_jobs(runtime: dict) -> list[dict]:
    """A Trainer runtime's replicated Jobs: {name, template: a batch/v1 JobTemplateSpec, ...}."""
    return runtime["spec"]["template"]["spec"]["replicatedJobs"]


def pod_templates(objects):
    """(owner, PodTemplateSpec) for every pod template the objects hold: Deployments, StatefulSets,
    Jobs and CronJobs, and Trainer runtimes (whose pods run in the namespace of the TrainJob that
    uses them). A ServingRuntime holds containers, not a pod template: see its own checks."""
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            yield obj, obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]
        elif obj["kind"] in TRAINING_RUNTIMES:
            for job in runtime_jobs(obj):
                yield obj, job["template"]["spec"]["template"]
