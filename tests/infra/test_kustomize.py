"""Every kustomization in k8s/ builds, and what it renders is valid and wired together.

Core kinds are checked against the Kubernetes OpenAPI schemas that kubernetes-validate ships
(strict: unknown fields fail); KServe's kinds, for which it has no schema, are rebuilt from the
kserve SDK's model classes, failing on unknown fields and on values the models reject; a Kubeflow
Trainer runtime, for which there is neither here, has its replicated Jobs checked as batch/v1 Jobs.
"""

import kubernetes.client
import kubernetes_validate
import pytest
from helpers.k8s_manifests import (
    KUSTOMIZATIONS,
    OVERLAYS,
    TRAINING_RUNTIMES,
    find,
    one,
    pod_templates,
    runtime_jobs,
)
from helpers.k8s_schema import SDK_MODELS, Violations, rebuild_sdk_object

# KServe >= 0.16 and Kubeflow Trainer 2.x need Kubernetes >= 1.32 (infra/README.md): the
# oldest cluster the manifests must fit.
KUBERNETES_VERSION = "1.32.0"

# The fields a Trainer runtime (trainer.kubeflow.org/v1alpha1) and its JobSet's replicated Jobs may
# have, from the Trainer's and JobSet's API types.
RUNTIME_SPEC_FIELDS = {"mlPolicy", "podGroupPolicy", "template"}
REPLICATED_JOB_FIELDS = {"name", "template", "replicas", "dependsOn", "groupName"}
# Created by the KFP install, not by these manifests.
EXTERNAL_NAMESPACES = {"kubeflow"}
PIPELINE_RUNNER = ("kubeflow", "pipeline-runner")
ISVC = ("InferenceService", "interactavatar", "interactavatar-serving")


def test_overlays_are_discovered():
    assert {"overlays/local", "overlays/gpu"} <= set(OVERLAYS)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_builds(build, kustomization):
    assert build(kustomization)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_kinds_match_the_kubernetes_schema(build, overlay):
    errors = []
    for obj in build(overlay):
        if (obj["apiVersion"], obj["kind"]) in SDK_MODELS:
            continue
        checked = [obj]
        if obj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and obj["kind"] in TRAINING_RUNTIMES:
            errors += [f"{obj['kind']} {obj['metadata']['name']}: unknown field spec.{field}"
                       for field in set(obj["spec"]) - RUNTIME_SPEC_FIELDS]
            errors += [f"{obj['kind']} {obj['metadata']['name']}: unknown field {field} in replicated Job {job['name']}"
                       for job in runtime_jobs(obj) for field in set(job) - REPLICATED_JOB_FIELDS]
            checked = [{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job["name"]},
                        "spec": job["template"]["spec"]} for job in runtime_jobs(obj)]
        for doc in checked:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{obj['kind']} {obj['metadata']['name']}: {error.message} at {list(error.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{obj['apiVersion']} {obj['kind']}: no schema; add its SDK model to SDK_MODELS")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kserve_kinds_match_the_sdk_models(build, overlay):
    checked = 0
    for obj in build(overlay):
        model = SDK_MODELS.get((obj["apiVersion"], obj["kind"]))
        if model is None:
            continue
        violations = Violations()
        rebuilt = rebuild_sdk_object(obj, model.__name__, obj["kind"], violations)
        assert violations == Violations(), f"not what the kserve SDK's {model.__name__} allows: {violations}"
        # Round trip: nothing the SDK knows is lost or changed.
        assert kubernetes.client.ApiClient().sanitize_for_serialization(rebuilt) == obj
        checked += 1
    assert checked == len(SDK_MODELS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inferenceservice_service_account_carries_the_s3_secret(build, overlay):
    objects = build(overlay)
    isvc = one(objects, *ISVC)
    namespace = isvc["metadata"]["namespace"]
    predictor = isvc["spec"]["predictor"]
    account = one(objects, "ServiceAccount", predictor["serviceAccountName"], namespace)
    secrets = [one(objects, "Secret", ref["name"], namespace) for ref in account.get("secrets", [])]
    s3_secrets = [
        s
        for s in secrets
        if {"serving.kserve.io/s3-endpoint", "serving.kserve.io/s3-usehttps", "serving.kserve.io/s3-region"}
        <= set(s["metadata"].get("annotations", {}))
        and {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(s.get("data", {}))
    ]
    assert len(s3_secrets) == 1, (
        "the predictor's ServiceAccount needs one Secret with KServe's S3 annotations"
    )
    # The annotated endpoint is the MinIO Service these manifests deploy.
    endpoint = s3_secrets[0]["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"]
    host, port = endpoint.split(":")
    service_name, service_namespace = host.split(".")[:2]
    service = one(objects, "Service", service_name, service_namespace)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    # The deploy step owns the storage URI; applying the manifests again must not revert it.
    assert "storageUri" not in predictor["model"]
    assert "env" not in predictor["model"], "credentials come from the ServiceAccount, never inline"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inferenceservice_runs_on_the_project_runtime(build, overlay):
    objects = build(overlay)
    isvc = one(objects, *ISVC)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in {
        "RawDeployment",
        "Standard",
    }
    predictor = isvc["spec"]["predictor"]
    assert predictor["timeout"] >= 600, "generation takes minutes"
    runtime = one(objects, "ServingRuntime", predictor["model"]["runtime"], isvc["metadata"]["namespace"])
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert predictor["model"]["modelFormat"]["name"] in formats
    (container,) = runtime["spec"]["containers"]
    assert container["args"][:1] == ["serve"] and "/mnt/models" in container["args"]
    assert container["args"][container["args"].index("--host") + 1] == "0.0.0.0"
    # Readiness gates traffic; liveness (after the startup probe) restarts a pod whose model is gone.
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live" and "startupProbe" in container


def test_gpu_overlay_pins_the_predictor_to_gpu_nodes(build):
    objects = build("overlays/gpu")
    predictor = one(objects, *ISVC)["spec"]["predictor"]
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    one(objects, "PriorityClass", predictor["priorityClassName"])


def test_local_overlay_asks_for_no_gpu(build):
    for obj in build("overlays/local"):
        assert "nvidia.com/gpu" not in str(obj), f"{obj['kind']} {obj['metadata']['name']} mentions a GPU"


def _allowed(objects, namespace: str, group: str, resource: str, verb: str) -> bool:
    runner_namespace, runner = PIPELINE_RUNNER
    for binding in find(objects, "RoleBinding", namespace=namespace):
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == runner and s.get("namespace") == runner_namespace
            for s in binding["subjects"]
        ):
            continue
        role = one(objects, binding["roleRef"]["kind"], binding["roleRef"]["name"], namespace)
        for rule in role["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
                return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_runner_may_deploy_and_launch_training(build, overlay):
    objects = build(overlay)
    serving_namespace = ISVC[2]
    # What interactavatar.pipeline.steps.deploy and interactavatar.cluster.trainjob call.
    wanted = [
        (serving_namespace, "serving.kserve.io", "inferenceservices", ("create", "get", "patch", "watch")),
        ("kubeflow", "trainer.kubeflow.org", "trainjobs", ("create", "get", "watch", "delete")),
    ]
    missing = [
        f"{verb} {group}/{resource} in {namespace}"
        for namespace, group, resource, verbs in wanted
        for verb in verbs
        if not _allowed(objects, namespace, group, resource, verb)
    ]
    assert not missing, f"pipeline-runner may not: {missing}"
    assert not _allowed(objects, serving_namespace, "serving.kserve.io", "inferenceservices", "delete")


def _pod_specs(objects):
    for owner, template in pod_templates(objects):
        yield owner, template["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_resolves_inside_the_build(build, overlay):
    objects = build(overlay)
    namespaces = {o["metadata"]["name"] for o in find(objects, "Namespace")} | EXTERNAL_NAMESPACES
    dangling = [
        f"{o['kind']} {o['metadata']['name']} in unknown namespace {o['metadata']['namespace']}"
        for o in objects
        if o["metadata"].get("namespace", "kubeflow") not in namespaces
    ]
    for owner, pod in _pod_specs(objects):
        # A cluster-scoped runtime's pods run in its TrainJob's namespace: looked up anywhere.
        namespace = owner["metadata"].get("namespace")
        refs = []
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for source in container.get("envFrom", []):
                refs += [("Secret", source["secretRef"]["name"])] if "secretRef" in source else []
                refs += [("ConfigMap", source["configMapRef"]["name"])] if "configMapRef" in source else []
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                refs += [("Secret", ref["secretKeyRef"]["name"])] if "secretKeyRef" in ref else []
                refs += [("ConfigMap", ref["configMapKeyRef"]["name"])] if "configMapKeyRef" in ref else []
        refs += _volume_refs(pod.get("volumes", []))
        dangling += [
            f"{owner['kind']} {owner['metadata']['name']} -> {kind} {name}"
            for kind, name in refs
            if not find(objects, kind, name, namespace)
        ]
    for runtime in find(objects, "ServingRuntime"):
        namespace = runtime["metadata"]["namespace"]
        dangling += [
            f"ServingRuntime {runtime['metadata']['name']} -> {kind} {name}"
            for kind, name in _volume_refs(runtime["spec"].get("volumes", []))
            if not find(objects, kind, name, namespace)
        ]
    assert not dangling, dangling


def _volume_refs(volumes) -> list[tuple[str, str]]:
    refs = []
    for volume in volumes:
        refs += [("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])] if "persistentVolumeClaim" in volume else []
        refs += [("Secret", volume["secret"]["secretName"])] if "secret" in volume else []
        refs += [("ConfigMap", volume["configMap"]["name"])] if "configMap" in volume else []
    return refs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned(build, overlay):
    images = [c["image"] for _, pod in _pod_specs(build(overlay)) for c in pod["containers"]]
    images += [c["image"] for o in find(build(overlay), "ServingRuntime") for c in o["spec"]["containers"]]
    unpinned = [i for i in images if ":" not in i.rsplit("/", 1)[-1] or i.endswith(":latest")]
    assert images and not unpinned, unpinned
