"""Kubernetes API clients: the pod's ServiceAccount inside the cluster, a kubeconfig outside it."""

from __future__ import annotations

import os


def custom_objects_api():
    """The Kubernetes API for custom resources: the pod's ServiceAccount inside the cluster,
    KUBECONFIG (or ~/.kube/config) outside it."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # Read KUBECONFIG now: the client captured its value when it was first imported.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.CustomObjectsApi()


def kserve_client():
    """The kserve SDK's client for InferenceServices, configured as `custom_objects_api` is: it
    loads the in-cluster config inside a pod, else the kubeconfig KUBECONFIG names (passed
    explicitly, since the kubernetes client captured KUBECONFIG when it was first imported)."""
    from kserve import KServeClient

    return KServeClient(config_file=os.environ.get("KUBECONFIG"))
