"""The deploy step puts the champion behind the InferenceService through the kserve SDK's
KServeClient, and waits until it is Ready.

No Kubernetes API server with KServe can run here: `k8s_api_stub` stands in for it on 127.0.0.1
(only it is stubbed), over real HTTP, and the client reaches it through a kubeconfig. It checks
every object it is sent against the InferenceService schema, keeps generations as the API server
does, and plays KServe's controller (Ready, a failed model load, a predictor that never comes up).
Everything else is real: the component's python function, the kserve and kubernetes clients, and
the manifests `kubectl kustomize` renders from k8s/.
"""

import re
import shutil
import subprocess

import pytest
import yaml
from helpers.k8s_api_stub import InferenceServiceAPIStub, becomes_ready, fails_to_load, stays_unavailable
from helpers.k8s_manifests import K8S, find_kubectl, one
from kfp import dsl
from kubernetes.client.rest import ApiException

from interactavatar.cluster.endpoint import EndpointNotReady
from interactavatar.cluster.k8s import custom_objects_api
from interactavatar.pipeline.components import deploy
from interactavatar.pipeline.steps import deploy as deploy_step

NAMESPACE, NAME = "interactavatar-serving", "interactavatar"
COLLECTION = f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices"
CHAMPION_1 = "s3://mlflow/artifacts/1/a/artifacts/model"
CHAMPION_2 = "s3://mlflow/artifacts/1/b/artifacts/model"


@pytest.fixture
def api_server(tmp_path, monkeypatch):
    """start(controller) -> a running stub that KUBECONFIG points at."""
    stubs = []

    def start(controller) -> InferenceServiceAPIStub:
        stub = InferenceServiceAPIStub(controller).__enter__()
        stubs.append(stub)
        monkeypatch.setenv("KUBECONFIG", str(stub.write_kubeconfig(tmp_path / "kubeconfig")))
        return stub

    yield start
    for stub in stubs:
        stub.__exit__(None, None, None)


def run_component(tmp_path, storage_uri: str, gpu: int = 1) -> str:
    manifest = dsl.Artifact(uri=str(tmp_path / "isvc.yaml"))
    manifest.path = str(tmp_path / "isvc.yaml")
    return deploy.python_func(storage_uri=storage_uri, endpoint_name=NAME, namespace=NAMESPACE, gpu=gpu, apply=True,
                              manifest=manifest)


def deploy_with(tmp_path, storage_uri: str, timeout_s: float, gpu: int = 1) -> str:
    return deploy_step(storage_uri, NAME, NAMESPACE, tmp_path / "isvc.yaml", apply=True, gpu=gpu,
                       ready_timeout_s=timeout_s)


@pytest.fixture(scope="module")
def rendered_endpoint(tmp_path_factory) -> dict:
    """The InferenceService `kubectl kustomize k8s/overlays/gpu` renders (the secrets' env files
    made from their examples, as docs/cluster.md tells an operator to)."""
    kubectl = find_kubectl()
    if kubectl is None:
        pytest.fail("kubectl not found ($KUBECTL, PATH, or the venv's bin): the k8s/ manifests cannot be built")
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.env"))
    for example in (tree / "secrets").glob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    done = subprocess.run([kubectl, "kustomize", str(tree / "overlays" / "gpu")], capture_output=True, text=True,
                          timeout=60, check=True)
    return one([doc for doc in yaml.safe_load_all(done.stdout) if doc], "InferenceService", NAME, NAMESPACE)


def test_first_deploy_creates_the_endpoint_and_waits_until_it_is_ready(api_server, tmp_path):
    stub = api_server(becomes_ready)
    assert run_component(tmp_path, CHAMPION_1, gpu=0) == "created"
    (_, _, _, created), = [r for r in stub.requests if r[0] == "POST"]
    assert stub.methods()[:2] == ["GET", "POST"] and stub.methods()[2:] == ["GET"] * (len(stub.methods()) - 2)
    assert created["spec"]["predictor"]["model"]["storageUri"] == CHAMPION_1
    # A CPU endpoint: no GPU anywhere, no GPU node selector or toleration.
    assert "nvidia.com/gpu" not in str(created) and "nodeSelector" not in created["spec"]["predictor"]
    assert "AWS_SECRET_ACCESS_KEY" not in str(created)
    assert stub.get(NAMESPACE, NAME)["status"]["conditions"][-1] == {"type": "Ready", "status": "True"}


def test_a_new_champion_patches_the_storage_uri_alone(api_server, tmp_path, rendered_endpoint):
    """The endpoint the operator applied (kustomize: no storageUri) gets the champion's URI and
    keeps every other field; the rollout counts as done only for the new generation."""
    stub = api_server(becomes_ready)
    applied = stub.store(rendered_endpoint, None)
    becomes_ready(stub, applied)  # the previous generation was Ready
    assert run_component(tmp_path, CHAMPION_2) == "patched"
    ((_, path, _, patch),) = [r for r in stub.requests if r[0] == "PATCH"]
    assert path == f"{COLLECTION}/{NAME}"
    # The kserve SDK's ModelSpec requires the format and sends the container's name: both as the
    # manifests have them.
    assert patch["spec"] == {"predictor": {"model": {"name": "kserve-container",
                                                     "modelFormat": {"name": "interactavatar"},
                                                     "storageUri": CHAMPION_2}}}
    live = stub.get(NAMESPACE, NAME)
    assert live["metadata"]["generation"] == 2 and live["status"]["observedGeneration"] == 2
    assert live["spec"]["predictor"]["model"].pop("storageUri") == CHAMPION_2
    assert live["spec"] == rendered_endpoint["spec"], "the deploy step changed a field the manifests own"


def test_reapplying_the_manifests_keeps_the_champion(api_server, tmp_path, rendered_endpoint):
    """`kubectl apply -k` sends at most the rendered manifest's own fields (its three-way merge
    deletes only fields it applied before, and the manifests never carry storageUri): applied
    again after a deploy, the endpoint still serves the champion."""
    assert "storageUri" not in rendered_endpoint["spec"]["predictor"]["model"], \
        "the manifests must not own the storage URI (the deploy step does)"
    stub = api_server(becomes_ready)
    stub.store(rendered_endpoint, None)
    assert deploy_with(tmp_path, CHAMPION_1, timeout_s=60) == "patched"
    custom_objects_api().patch_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices",
                                                        NAME, rendered_endpoint)
    assert stub.get(NAMESPACE, NAME)["spec"]["predictor"]["model"]["storageUri"] == CHAMPION_1


def test_a_model_that_fails_to_load_fails_the_step_with_its_conditions(api_server, tmp_path):
    message = "s3://mlflow/artifacts/1/b/artifacts/model: no objects found"
    api_server(fails_to_load("ModelLoadFailed", message))
    with pytest.raises(EndpointNotReady, match=re.escape(
            f"InferenceService {NAMESPACE}/{NAME} failed (BlockedByFailedLoad: ModelLoadFailed: {message}); "
            f"conditions: PredictorReady=False (ModelLoadFailed: {message}); "
            f"Ready=False (ModelLoadFailed: {message})")):
        deploy_with(tmp_path, CHAMPION_2, timeout_s=60)


def test_an_endpoint_not_ready_in_time_fails_with_its_conditions(api_server, tmp_path):
    api_server(stays_unavailable)
    with pytest.raises(EndpointNotReady, match=re.escape(
            f"InferenceService {NAMESPACE}/{NAME} not Ready after 1 s; conditions: "
            "PredictorReady=False (MinimumReplicasUnavailable: Deployment does not have minimum availability.); "
            "Ready=False (MinimumReplicasUnavailable: Deployment does not have minimum availability.)")):
        deploy_with(tmp_path, CHAMPION_2, timeout_s=1)


def test_the_stub_refuses_a_malformed_inference_service_as_an_api_server_does(api_server):
    """The stub holds what it is sent to the InferenceService schema: a mistyped value is refused
    with 422 Invalid, an unknown field with 400 under fieldValidation=Strict, each named."""
    stub = api_server(becomes_ready)
    malformed = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                 "metadata": {"name": NAME, "namespace": NAMESPACE},
                 "spec": {"predictor": {"minReplicas": "one", "model": {"modelFormat": {"name": "x"}}}}}
    with pytest.raises(ApiException) as refused:
        custom_objects_api().create_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                                             "inferenceservices", malformed)
    assert refused.value.status == 422 and "spec.predictor.minReplicas: 'one' is not int" in refused.value.body
    malformed["spec"]["predictor"] = {"minReplicas": 1, "modelz": {}}
    with pytest.raises(ApiException) as strict:
        custom_objects_api().create_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE,
                                                             "inferenceservices", malformed, field_validation="Strict")
    assert strict.value.status == 400 and 'unknown field \\"InferenceService.spec.predictor.modelz\\"' in \
        strict.value.body
    assert stub.objects == {}
