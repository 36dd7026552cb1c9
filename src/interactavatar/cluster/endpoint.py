"""Rolling the champion out to the KServe InferenceService, through the kserve SDK's `KServeClient`,
and waiting until it serves.

Who owns which field (docs/cluster.md, "Who owns what"): the kustomize manifests own the endpoint's
shape (runtime, resources, node placement, timeouts, ServiceAccount) and ship no storageUri; the
deploy step owns `spec.predictor.model.storageUri` and patches nothing else, so `kubectl apply -k`
(whose three-way merge removes only fields it applied itself) never reverts the champion, and a
deploy never reverts an operator's resources. Where the InferenceService does not exist yet (a
cluster where only the pipeline deploys), the deploy step creates it whole.

Ready means KServe's `Ready` condition is True for the generation the deploy wrote
(`status.observedGeneration`): right after a patch the old generation's Ready still reads True. A
model KServe reports as failed (`status.modelStatus.transitionStatus` BlockedByFailedLoad or
InvalidSpec: the storage initializer or the server could not load it) fails at once, with the
conditions and KServe's failure record; neither within the timeout fails with the conditions too.
"""

from __future__ import annotations

import itertools
import time

# KServe's model transition states that no waiting will fix (its v1beta1 ModelStatus).
FAILED_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")


class EndpointNotReady(RuntimeError):
    """The InferenceService failed or did not become Ready; the message lists its conditions."""


def deploy_inference_service(isvc, ready_timeout_s: float, poll_s: float = 5.0) -> str:
    """Point the InferenceService that `isvc` (a kserve.V1beta1InferenceService) describes at its
    storageUri: patch that field alone when the InferenceService exists (KServe rolls the predictor
    over: the old one serves until the new one is ready), else create it whole. Then wait up to
    `ready_timeout_s` for it to be Ready. Returns "created" or "patched". Raises EndpointNotReady,
    naming its conditions, when KServe reports the model failed or it is not Ready in time, and
    RuntimeError with the API server's message when the request is refused."""
    from kserve import (
        V1beta1InferenceService,
        V1beta1InferenceServiceSpec,
        V1beta1ModelSpec,
        V1beta1PredictorSpec,
    )
    from kubernetes import client

    from interactavatar.cluster.k8s import kserve_client

    kserve = kserve_client()
    name, namespace = isvc.metadata.name, isvc.metadata.namespace
    model = isvc.spec.predictor.model
    if _get(kserve, name, namespace) is None:
        written, outcome = _request(f"create InferenceService {namespace}/{name}", kserve.create, isvc), "created"
    else:
        # The SDK's ModelSpec requires a model format and sends a container name ("" unless set):
        # both go as the manifests carry them, so that the patch changes the storageUri alone.
        storage_only = V1beta1InferenceService(
            api_version=isvc.api_version, kind=isvc.kind,
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            spec=V1beta1InferenceServiceSpec(predictor=V1beta1PredictorSpec(model=V1beta1ModelSpec(
                name=model.name, model_format=model.model_format, storage_uri=model.storage_uri))))
        written, outcome = _request(f"patch InferenceService {namespace}/{name}", kserve.patch, name,
                                    storage_only), "patched"
    wait_until_ready(kserve, name, namespace, written["metadata"].get("generation", 1), ready_timeout_s, poll_s)
    return outcome


def wait_until_ready(kserve, name: str, namespace: str, generation: int, timeout_s: float,
                     poll_s: float = 5.0) -> dict:
    """The InferenceService once KServe has seen `generation` and reports it Ready. Polls with the
    kserve client's get, soon at first (KServe records a generation within a second), then every
    `poll_s` (a rollout takes minutes)."""
    deadline = time.monotonic() + timeout_s
    for attempt in itertools.count():
        isvc = kserve.get(name, namespace=namespace)
        status = isvc.get("status", {})
        current = int(status.get("observedGeneration", 0)) >= generation
        conditions = status.get("conditions", [])
        if current and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return isvc
        model_status = status.get("modelStatus", {})
        if current and model_status.get("transitionStatus") in FAILED_TRANSITIONS:
            failure = model_status.get("lastFailureInfo", {})
            raise EndpointNotReady(
                f"InferenceService {namespace}/{name} failed ({model_status['transitionStatus']}: "
                f"{failure.get('reason', 'no reason')}: {failure.get('message', 'no message')}); "
                f"conditions: {describe_conditions(conditions)}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            seen = "" if current else f" (KServe has not yet seen generation {generation})"
            raise EndpointNotReady(f"InferenceService {namespace}/{name} not Ready after {timeout_s:.0f} s{seen}; "
                                   f"conditions: {describe_conditions(conditions)}")
        time.sleep(min(poll_s, 0.1 * 2**attempt, remaining))


def describe_conditions(conditions: list[dict]) -> str:
    """Each condition as `Type=Status (Reason: message)`, or "none reported"."""
    described = []
    for condition in conditions:
        detail = ": ".join(part for part in (condition.get("reason"), condition.get("message")) if part)
        described.append(f"{condition.get('type')}={condition.get('status')}" + (f" ({detail})" if detail else ""))
    return "; ".join(described) or "none reported"


def _get(kserve, name: str, namespace: str) -> dict | None:
    """The InferenceService, or None when there is none. The kserve client wraps every API error in
    a RuntimeError raised while handling it: the ApiException is its context."""
    from kubernetes.client.rest import ApiException

    try:
        return kserve.get(name, namespace=namespace)
    except RuntimeError as err:
        if isinstance(err.__context__, ApiException) and err.__context__.status == 404:
            return None
        raise


def _request(what: str, call, *args):
    """`call(*args)`, with a refusal reported as `what` and the API server's own message (the
    kserve client's RuntimeError carries the whole response, headers included)."""
    import json

    from kubernetes.client.rest import ApiException

    try:
        return call(*args)
    except RuntimeError as err:
        if not isinstance(err.__context__, ApiException):
            raise
        refusal = err.__context__
        try:
            message = json.loads(refusal.body).get("message", refusal.body)
        except (TypeError, ValueError):
            message = refusal.body
        raise RuntimeError(f"{what}: refused by the API server ({refusal.status} {refusal.reason}): {message}") from err
