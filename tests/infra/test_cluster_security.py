"""The cluster manifests' security (docs/cluster.md, "Security"): pod security, credentials scoped per
namespace, no secret on a command line, NetworkPolicies, and RBAC that makes no pods without need.

No Kubernetes API server (nor admission, nor a CNI) can run here, so every check reads what
`kubectl kustomize` renders for each overlay, plus the pods that code makes at run time (the
TrainJob of src/interactavatar/cluster/trainjob.py on its runtime, the predictor KServe builds from
the InferenceService and its ServingRuntime), and evaluates them as the cluster would. Each checker
is also shown a manifest that breaks its rule (the `..._catches_...` tests), so a check that can no
longer fail fails.
"""

import base64
import copy
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import kubernetes.client
import pytest
from helpers.k8s_manifests import K8S, OVERLAYS, find, is_secret_name, one, pod_templates

from interactavatar.cluster.names import IMAGE, S3_SECRET, TRAINER_RUNTIME
from interactavatar.cluster.trainjob import TrainJobSettings, build_train_job

MINIO_NAMESPACE = "interactavatar"
SERVING_NAMESPACE = "interactavatar-serving"
PIPELINE_NAMESPACE = "kubeflow"
ROOT_SECRET = "minio-root-credentials"
SETUP_JOB = "minio-setup"
# Namespaces that enforce less than Pod Security `restricted`, with the level and the reason.
PSA_EXCEPTIONS = {
    SERVING_NAMESPACE: ("baseline", "KServe injects its storage initializer into the predictor pod with "
                                    "the ClusterStorageContainer's securityContext, which KServe ships "
                                    "without the restricted settings (docs/cluster.md, 'Pod security')"),
}
# Namespaces that hold pods of ours but no default-deny NetworkPolicy, and why.
NO_DEFAULT_DENY = {
    PIPELINE_NAMESPACE: "KFP's namespace: KFP's own components talk there in ways these manifests do not "
                        "know; MinIO and MLflow admit it as a whole",
}
# Roles that may create or change objects that make pods, and why each needs to.
POD_MAKING_GRANTS = {
    ("Role", SERVING_NAMESPACE, "interactavatar-deployer", "serving.kserve.io", "inferenceservices"): (
        {"create", "patch"},
        "the deploy step creates the endpoint and rolls a new champion out by patching its storageUri; "
        "KServe makes the predictor's Deployment from it"),
    ("Role", PIPELINE_NAMESPACE, "interactavatar-trainer-launcher", "trainer.kubeflow.org", "trainjobs"): (
        {"create"},
        "multi-node training creates one TrainJob per stage; the Trainer makes its node pods from the "
        "hardened runtime interactavatar-torch"),
}
# (API group, resource) whose create, update or patch makes pods run, directly or through a controller.
POD_MAKING = {
    ("", "pods"), ("", "pods/exec"), ("", "pods/attach"), ("", "pods/ephemeralcontainers"),
    ("", "replicationcontrollers"),
    ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"),
    ("batch", "jobs"), ("batch", "cronjobs"),
    ("serving.kserve.io", "inferenceservices"), ("serving.kserve.io", "servingruntimes"),
    ("serving.kserve.io", "clusterservingruntimes"), ("serving.kserve.io", "inferencegraphs"),
    ("serving.kserve.io", "llminferenceservices"),
    ("trainer.kubeflow.org", "trainjobs"), ("trainer.kubeflow.org", "trainingruntimes"),
    ("trainer.kubeflow.org", "clustertrainingruntimes"), ("jobset.x-k8s.io", "jobsets"),
    ("argoproj.io", "workflows"), ("argoproj.io", "cronworkflows"), ("argoproj.io", "workflowtemplates"),
    ("kubeflow.org", "pytorchjobs"), ("kubeflow.org", "notebooks"),
}
MAKING_VERBS = {"create", "update", "patch"}
# Read-only S3 actions: what the predictor's MinIO user may do, and all it may do.
READ_ONLY_ACTIONS = {"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"}
# The buckets each scoped MinIO user may touch at all.
POLICY_BUCKETS = {
    "interactavatar-serving": {"models", "mlflow"},
    "interactavatar-pipeline": {"dvc", "mlflow", "models"},
    "interactavatar-mlflow": {"mlflow"},
}
# The label an operator puts on the ingress gateway's namespace (docs/cluster.md, "Network").
GATEWAY_LABEL = {"interactavatar/ingress-gateway": "true"}
# KServe labels an InferenceService's pods with its name.
ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"


def env_example(name: str) -> dict[str, str]:
    lines = [line.strip() for line in (K8S / "secrets" / name).read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def decoded(secret: dict) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}


# ---- the pods ------------------------------------------------------------------------------------

@dataclass
class Pod:
    """A pod as the cluster would run it: where, its labels, its spec, and its ServiceAccount."""

    what: str
    namespace: str
    labels: dict
    spec: dict
    service_account: dict = field(default_factory=dict)


def _deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else copy.deepcopy(value)
    return merged


def predictor_pods(objects) -> list[Pod]:
    """The predictor KServe builds from each InferenceService: its runtime's container with the
    InferenceService's container fields merged in, the runtime's volumes and labels, the
    InferenceService's pod fields. (KServe also injects its storage initializer, from the cluster's
    ClusterStorageContainer, which these manifests do not hold: see PSA_EXCEPTIONS.)"""
    container_fields = set(kubernetes.client.V1Container.attribute_map.values())
    pod_fields = set(kubernetes.client.V1PodSpec.attribute_map.values()) - {"containers"}
    pods = []
    for isvc in find(objects, "InferenceService"):
        namespace, predictor = isvc["metadata"]["namespace"], isvc["spec"]["predictor"]
        runtime = one(objects, "ServingRuntime", predictor["model"]["runtime"], namespace)["spec"]
        (container,) = runtime["containers"]
        model = {k: v for k, v in predictor["model"].items() if k in container_fields}
        spec = {k: copy.deepcopy(v) for k, v in predictor.items() if k in pod_fields}
        spec["containers"] = [_deep_merge(container, model)]
        spec["volumes"] = runtime.get("volumes", []) + predictor.get("volumes", [])
        account = one(objects, "ServiceAccount", predictor.get("serviceAccountName", "default"), namespace)
        labels = {**runtime.get("labels", {}), ISVC_POD_LABEL: isvc["metadata"]["name"], "component": "predictor"}
        pods.append(Pod(f"InferenceService {isvc['metadata']['name']}", namespace, labels, spec, account))
    return pods


def train_job_pod(objects) -> Pod:
    """A node of the TrainJob `trainjob.build_train_job` creates with its default settings, as the
    Trainer makes it: the runtime's `node` pod with the TrainJob's image, command, environment and
    resources in its `node` container."""
    settings = TrainJobSettings(num_nodes=2, gpus_per_node=1, image=IMAGE)
    job = build_train_job("interactavatar-vae-0123456789", settings, ["train", "vae"], {"data": "s3://models/in"},
                          "s3://models/out", "s3://models/checkpoints")
    # Anything besides these would be a second source of pod settings next to the runtime's.
    assert set(job["spec"]) == {"runtimeRef", "trainer"}, set(job["spec"])
    trainer = job["spec"]["trainer"]
    assert set(trainer) <= {"image", "command", "args", "env", "numNodes", "numProcPerNode", "resourcesPerNode"}
    runtime = one(objects, "ClusterTrainingRuntime", job["spec"]["runtimeRef"]["name"])
    (node,) = [j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node"]
    template = copy.deepcopy(node["template"]["spec"]["template"])
    (container,) = [c for c in template["spec"]["containers"] if c["name"] == "node"]
    container.update(image=trainer["image"], command=trainer["command"],
                     env=container.get("env", []) + trainer["env"],
                     resources=trainer.get("resourcesPerNode", {}))
    return Pod(f"TrainJob on {runtime['metadata']['name']}", job["metadata"]["namespace"],
               template["metadata"].get("labels", {}), template["spec"])


def all_pods(objects) -> list[Pod]:
    pods = []
    for owner, template in pod_templates(objects):
        if owner["kind"] == "ClusterTrainingRuntime":
            continue  # its pods are the TrainJob's, below
        namespace = owner["metadata"]["namespace"]
        account = find(objects, "ServiceAccount", template["spec"].get("serviceAccountName", "default"), namespace)
        pods.append(Pod(f"{owner['kind']} {owner['metadata']['name']}", namespace,
                        template["metadata"].get("labels", {}), template["spec"], account[0] if account else {}))
    # Copies: the tests change them, and the builds are shared between tests.
    return copy.deepcopy(pods + predictor_pods(objects) + [train_job_pod(objects)])


@pytest.fixture(params=OVERLAYS)
def rendered(build, request):
    return build(request.param)


# ---- pod security --------------------------------------------------------------------------------

def pod_security_problems(pod: Pod) -> list[str]:
    """What keeps `pod` from Pod Security `restricted` and from the project's own rules: a read-only
    root filesystem with an emptyDir at /tmp, and no ServiceAccount token (no pod of ours calls the
    Kubernetes API)."""
    spec, problems = pod.spec, []
    pod_context = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        problems += [f"{flag}"] if spec.get(flag) else []
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    problems += [f"volume {name}: hostPath" for name, v in volumes.items() if "hostPath" in v]
    automount = spec.get("automountServiceAccountToken", pod.service_account.get("automountServiceAccountToken"))
    problems += ["mounts a ServiceAccount token it does not need"] if automount is not False else []
    for container in spec.get("initContainers", []) + spec["containers"]:
        name, context = container["name"], container.get("securityContext", {})

        def effective(key, context=context):
            return context.get(key, pod_context.get(key))

        if effective("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if effective("runAsUser") == 0:
            problems.append(f"{name}: runs as uid 0")
        if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile is not RuntimeDefault")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: does not drop ALL capabilities")
        if context.get("capabilities", {}).get("add"):
            problems.append(f"{name}: adds capabilities")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}) or tmp[0].get("readOnly"):
            problems.append(f"{name}: no writable emptyDir at /tmp")
    return problems


def test_every_pod_meets_pod_security_restricted(rendered):
    pods = all_pods(rendered)
    # Guards the guard: the walk finds every workload (an empty walk passes nothing).
    assert {p.what for p in pods} >= {
        "Deployment minio", "Deployment mlflow", "StatefulSet mlflow-postgres", f"Job {SETUP_JOB}",
        "InferenceService interactavatar", f"TrainJob on {TRAINER_RUNTIME}"}
    problems = [f"{pod.what}: {problem}" for pod in pods for problem in pod_security_problems(pod)]
    assert not problems, "\n".join(problems)


WEAKENINGS = {
    "root": lambda s: s["securityContext"].update(runAsUser=0),
    "writable root": lambda s: s["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"),
    "no seccomp": lambda s: s["securityContext"].pop("seccompProfile"),
    "escalation": lambda s: s["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
    "capabilities": lambda s: s["containers"][0]["securityContext"].update(capabilities={"add": ["NET_ADMIN"]}),
    "no /tmp": lambda s: s["containers"][0].update(volumeMounts=[]),
    "token": lambda s: s.update(automountServiceAccountToken=True),
    "host network": lambda s: s.update(hostNetwork=True),
}


@pytest.mark.parametrize("weakening", WEAKENINGS)
def test_pod_security_check_catches_a_weakened_pod(build, weakening):
    (mlflow,) = [p for p in all_pods(build("overlays/local")) if p.what == "Deployment mlflow"]
    assert not pod_security_problems(mlflow)
    WEAKENINGS[weakening](mlflow.spec)
    assert pod_security_problems(mlflow)


def test_namespaces_enforce_pod_security_restricted(rendered):
    namespaces = find(rendered, "Namespace")
    assert {n["metadata"]["name"] for n in namespaces} >= {MINIO_NAMESPACE, SERVING_NAMESPACE}
    problems = []
    for namespace in namespaces:
        name, labels = namespace["metadata"]["name"], namespace["metadata"].get("labels", {})
        enforce = PSA_EXCEPTIONS.get(name, ("restricted", ""))[0]
        wanted = {"enforce": enforce, "warn": "restricted", "audit": "restricted"}
        problems += [f"{name}: pod-security.kubernetes.io/{mode} is {labels.get(f'pod-security.kubernetes.io/{mode}')}"
                     f", not {level}" for mode, level in wanted.items()
                     if labels.get(f"pod-security.kubernetes.io/{mode}") != level]
    assert not problems, problems
    # An exception for a namespace that is gone would hide a new one of that name.
    assert set(PSA_EXCEPTIONS) <= {n["metadata"]["name"] for n in namespaces}


# ---- credentials ---------------------------------------------------------------------------------

def test_minio_root_pair_stays_in_minio_namespace(rendered):
    root = set(env_example("minio-root.env.example").values())
    others = {v for e in (K8S / "secrets").glob("*.env.example") if e.name != "minio-root.env.example"
              for v in env_example(e.name).values()}
    # With every example's values distinct, finding the root's values finds the root pair.
    assert not root & others, "the examples must not share values with the root pair's"
    problems = []
    for obj in rendered:
        namespace = obj["metadata"].get("namespace")
        text = json.dumps(obj) + (json.dumps(decoded(obj)) if obj["kind"] == "Secret" else "")
        holds = any(value in text for value in root) or ROOT_SECRET in text
        if holds and namespace != MINIO_NAMESPACE:
            problems.append(f"{obj['kind']} {namespace}/{obj['metadata']['name']} holds or names the root pair")
        if obj["kind"] == "Secret" and obj["metadata"]["name"] != ROOT_SECRET and root & set(decoded(obj).values()):
            problems.append(f"Secret {namespace}/{obj['metadata']['name']} holds a root value")
    users = {p.what for p in all_pods(rendered) if ROOT_SECRET in json.dumps(p.spec) or "MINIO_ROOT" in json.dumps(p.spec)}
    assert users == {"Deployment minio", f"Job {SETUP_JOB}"}, f"the root pair reaches {users}"
    assert not problems, problems


def scoped_policies(objects) -> dict[str, tuple[str, dict]]:
    """Access key -> (name, document) of the policy the setup Job gives that MinIO user: the Job
    mounts each user's Secret in a folder named after its policy (interactavatar.cluster.minio_setup)."""
    job = one(objects, "Job", SETUP_JOB, MINIO_NAMESPACE)["spec"]["template"]["spec"]
    (container,) = job["containers"]
    arguments = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if "=" in a)
    volumes = {v["name"]: v for v in job["volumes"]}
    (policy_volume,) = [m for m in container["volumeMounts"] if m["mountPath"] == arguments["policies"]]
    policy_files = one(objects, "ConfigMap", volumes[policy_volume["name"]]["configMap"]["name"], MINIO_NAMESPACE)
    by_key = {}
    for mount in container["volumeMounts"]:
        path = PurePosixPath(mount["mountPath"])
        if str(path.parent) != arguments["users"]:
            continue
        secret = one(objects, "Secret", volumes[mount["name"]]["secret"]["secretName"], MINIO_NAMESPACE)
        access_key = decoded(secret)["AWS_ACCESS_KEY_ID"]
        assert access_key not in by_key, f"{access_key} is registered twice"
        by_key[access_key] = (path.name, json.loads(policy_files["data"][f"{path.name}.json"]))
    return by_key


def policy_problems(name: str, policy: dict, read_only: bool) -> list[str]:
    problems = []
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Effect"] != "Allow":
            continue
        problems += [f"{name}: {a}" for a in actions if "*" in a or not a.startswith("s3:")]
        problems += [f"{name}: {a} is not read-only" for a in actions if read_only and a not in READ_ONLY_ACTIONS]
        buckets = {r.removeprefix("arn:aws:s3:::").split("/", 1)[0] for r in resources}
        problems += [f"{name}: bucket {b}" for b in buckets - POLICY_BUCKETS.get(name, set())]
    return problems


def test_each_namespace_holds_only_its_scoped_pair(rendered):
    policies = scoped_policies(rendered)
    assert sorted(name for name, _ in policies.values()) == sorted(POLICY_BUCKETS)
    problems = []
    for name, policy in policies.values():
        problems += policy_problems(name, policy, read_only=name == "interactavatar-serving")
    holders = {
        # KServe's storage initializer presents the Secret of the predictor's ServiceAccount.
        "interactavatar-serving": one(rendered, "Secret", S3_SECRET, SERVING_NAMESPACE),
        "interactavatar-pipeline": one(rendered, "Secret", S3_SECRET, PIPELINE_NAMESPACE),
        "interactavatar-mlflow": one(rendered, "Secret", "mlflow-s3", MINIO_NAMESPACE),
    }
    for name, secret in holders.items():
        access_key = decoded(secret)["AWS_ACCESS_KEY_ID"]
        if policies.get(access_key, (None,))[0] != name:
            problems.append(f"Secret {secret['metadata']['namespace']}/{secret['metadata']['name']}: its key "
                            f"holds {policies.get(access_key, ('no policy',))[0]}, not {name}")
    # Nor does a namespace hold anyone else's pair (MinIO's own namespace registers them all).
    allowed = {SERVING_NAMESPACE: {"interactavatar-serving"}, PIPELINE_NAMESPACE: {"interactavatar-pipeline"}}
    for secret in find(rendered, "Secret"):
        namespace, access_key = secret["metadata"]["namespace"], decoded(secret).get("AWS_ACCESS_KEY_ID")
        if access_key and namespace in allowed and policies.get(access_key, ("?",))[0] not in allowed[namespace]:
            problems.append(f"Secret {namespace}/{secret['metadata']['name']}: a pair that is not {allowed[namespace]}")
    account = one(rendered, "ServiceAccount", "interactavatar-predictor", SERVING_NAMESPACE)
    assert [s["name"] for s in account["secrets"]] == [S3_SECRET]
    # MLflow presents its own pair and no other (the predictor's is its ServiceAccount's, above).
    (mlflow,) = [p for p in all_pods(rendered) if p.what == "Deployment mlflow"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in mlflow.spec["containers"][0]["env"]
            if e["name"].startswith("AWS_") and "valueFrom" in e}
    assert refs == {"mlflow-s3"}, refs
    assert not problems, problems


@pytest.mark.parametrize("policy, read_only", [
    ({"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                     "Resource": ["arn:aws:s3:::models/*"]}]}, True),
    ({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::models/*"}]}, False),
    ({"Statement": [{"Effect": "Allow", "Action": ["admin:CreateUser"], "Resource": ["arn:aws:s3:::*"]}]}, False),
    ({"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::dvc/*"]}]}, True),
])
def test_policy_check_catches_a_wider_policy(policy, read_only):
    assert policy_problems("interactavatar-serving", policy, read_only)


def secret_variables(container: dict, objects, namespace: str) -> set[str]:
    """The container's environment variables that hold a secret: a secret's key from a Secret (a
    user or database name there is not one), or a variable built from one."""
    names = set()
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            secret = find(objects, "Secret", source["secretRef"]["name"], namespace)
            names |= {source.get("prefix", "") + key for s in secret for key in s.get("data", {}) if is_secret_name(key)}
    for env in container.get("env", []):
        if "secretKeyRef" in env.get("valueFrom", {}) and is_secret_name(env["valueFrom"]["secretKeyRef"]["key"]):
            names.add(env["name"])
        elif any(f"$({name})" in env.get("value", "") for name in names):
            names.add(env["name"])
    return names


def command_line_problems(pod: Pod, objects, passwords: set[str]) -> list[str]:
    """Secrets on a command line (command, args, exec probes and hooks), where anyone who can list
    the node's processes reads them: a secret's value, or a reference that expands to one."""
    problems = []
    for container in pod.spec.get("initContainers", []) + pod.spec["containers"]:
        lines = container.get("command", []) + container.get("args", [])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            lines += container.get(probe, {}).get("exec", {}).get("command", [])
        for hook in container.get("lifecycle", {}).values():
            lines += hook.get("exec", {}).get("command", [])
        text = "\n".join(lines)
        for name in secret_variables(container, objects, pod.namespace):
            if re.search(rf"\$(\(|\{{)?{re.escape(name)}\b", text):
                problems.append(f"{pod.what}/{container['name']}: ${name} on its command line")
        problems += [f"{pod.what}/{container['name']}: a password on its command line"
                     for password in passwords if password in text]
    return problems


def test_no_secret_on_a_command_line(rendered):
    passwords = {v for e in (K8S / "secrets").glob("*.env.example") for v in env_example(e.name).values()
                 if v.startswith("CHANGE_ME")}
    problems = [p for pod in all_pods(rendered) for p in command_line_problems(pod, rendered, passwords)]
    assert not problems, problems
    # MLflow takes its database, password and all, from the environment.
    (mlflow,) = [p for p in all_pods(rendered) if p.what == "Deployment mlflow"]
    (container,) = mlflow.spec["containers"]
    assert not [a for a in container["args"] if a.startswith("--backend-store-uri")]
    uri = next(e["value"] for e in container["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert "$(POSTGRES_PASSWORD)" in uri


def test_command_line_check_catches_the_password_in_an_argument(build):
    objects = build("overlays/local")
    (mlflow,) = [p for p in all_pods(objects) if p.what == "Deployment mlflow"]
    mlflow.spec["containers"][0]["args"].append("--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)")
    assert command_line_problems(mlflow, objects, set())
    (postgres,) = [p for p in all_pods(objects) if p.what == "StatefulSet mlflow-postgres"]
    postgres.spec["containers"][0]["readinessProbe"]["exec"]["command"][-1] += ' -W "$POSTGRES_PASSWORD"'
    assert command_line_problems(postgres, objects, set())
    (setup,) = [p for p in all_pods(objects) if p.what == f"Job {SETUP_JOB}"]
    setup.spec["containers"][0]["args"].append("--secret=s3cr3t-value")
    assert command_line_problems(setup, objects, {"s3cr3t-value"})


def test_endpoint_token_is_a_mounted_secret(rendered):
    runtime = one(rendered, "ServingRuntime", "interactavatar", SERVING_NAMESPACE)["spec"]
    (container,) = runtime["containers"]
    path = PurePosixPath(next(e["value"] for e in container["env"] if e["name"] == "INTERACTAVATAR_AUTH_TOKEN_FILE"))
    (mount,) = [m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == path.parent]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in runtime["volumes"] if v["name"] == mount["name"]]
    secret = one(rendered, "Secret", volume["secret"]["secretName"], SERVING_NAMESPACE)
    assert path.name in secret["data"]


# ---- network -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace, labels) or, with no namespace, an outside address."""

    namespace: str | None
    labels: tuple = ()
    address: str = "203.0.113.7"


def _selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not ok:
            return False
    return True


def _namespace_labels(objects, name: str, extra: dict) -> dict:
    rendered = find(objects, "Namespace", name)
    labels = rendered[0]["metadata"].get("labels", {}) if rendered else {}
    # The API server labels every namespace with its name.
    return {**labels, **extra.get(name, {}), "kubernetes.io/metadata.name": name}


def _peer_matches(rule_peers, peer: Peer, policy_namespace: str, objects, extra) -> bool:
    if not rule_peers:
        return True
    for item in rule_peers:
        if "ipBlock" in item:
            block = item["ipBlock"]
            if peer.namespace is None and ipaddress.ip_address(peer.address) in ipaddress.ip_network(block["cidr"]) \
                    and not any(ipaddress.ip_address(peer.address) in ipaddress.ip_network(e)
                                for e in block.get("except", [])):
                return True
            continue
        if peer.namespace is None:
            continue
        if "namespaceSelector" in item:
            if not _selects(item["namespaceSelector"], _namespace_labels(objects, peer.namespace, extra)):
                continue
        elif peer.namespace != policy_namespace:
            continue
        if _selects(item.get("podSelector", {}), dict(peer.labels)):
            return True
    return False


def _ports_match(rule_ports, port: int, protocol: str) -> bool:
    return not rule_ports or any(
        p.get("protocol", "TCP") == protocol and ("port" not in p or p["port"] <= port <= p.get("endPort", p["port"]))
        for p in rule_ports)


def _admits(objects, subject: Peer, other: Peer, port: int, protocol: str, direction: str, extra) -> bool:
    """Whether the NetworkPolicies of `subject`'s namespace let it send (Egress) to or receive
    (Ingress) from `other` on `port`: a pod no policy isolates in that direction is open."""
    if subject.namespace is None:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolating = [p["spec"] for p in find(objects, "NetworkPolicy", namespace=subject.namespace)
                 if _selects(p["spec"]["podSelector"], dict(subject.labels))
                 and direction in p["spec"].get("policyTypes", ["Ingress"] + (["Egress"] if "egress" in p["spec"] else []))]
    if not isolating:
        return True
    return any(_ports_match(rule.get("ports"), port, protocol)
               and _peer_matches(rule.get(peers_key), other, subject.namespace, objects, extra)
               for spec in isolating for rule in spec.get(rules_key, []))


def connects(objects, source: Peer, destination: Peer, port: int, protocol: str = "TCP", extra=None) -> bool:
    extra = extra or {}
    return (_admits(objects, source, destination, port, protocol, "Egress", extra)
            and _admits(objects, destination, source, port, protocol, "Ingress", extra))


def _pod_peer(pods, what: str) -> Peer:
    (pod,) = [p for p in pods if p.what == what]
    return Peer(pod.namespace, tuple(sorted(pod.labels.items())))


def test_every_namespace_with_pods_denies_by_default(rendered):
    namespaces = {p.namespace for p in all_pods(rendered)}
    assert namespaces >= {MINIO_NAMESPACE, SERVING_NAMESPACE, PIPELINE_NAMESPACE}
    missing = []
    for namespace in sorted(namespaces - set(NO_DEFAULT_DENY)):
        denies = [p for p in find(rendered, "NetworkPolicy", namespace=namespace)
                  if p["spec"]["podSelector"] == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
                  and not p["spec"].get("ingress") and not p["spec"].get("egress")]
        missing += [namespace] if not denies else []
    assert not missing, f"no default-deny NetworkPolicy (Ingress and Egress) in {missing}"


def test_network_policies_admit_only_what_is_needed(rendered):
    pods = all_pods(rendered)
    minio, mlflow = _pod_peer(pods, "Deployment minio"), _pod_peer(pods, "Deployment mlflow")
    postgres, setup = _pod_peer(pods, "StatefulSet mlflow-postgres"), _pod_peer(pods, f"Job {SETUP_JOB}")
    predictor = _pod_peer(pods, "InferenceService interactavatar")
    train_node = _pod_peer(pods, f"TrainJob on {TRAINER_RUNTIME}")
    pipeline_task = Peer(PIPELINE_NAMESPACE, (("workflows.argoproj.io/workflow", "run-1"),))
    gateway = Peer("gateway-system", (("app", "gateway"),))
    stranger = Peer("default", (("app", "other"),))
    outside = Peer(None)
    extra = {"gateway-system": GATEWAY_LABEL}
    admitted = {
        "MLflow -> MinIO": (mlflow, minio, 9000), "setup Job -> MinIO": (setup, minio, 9000),
        "pipeline task -> MinIO": (pipeline_task, minio, 9000), "TrainJob node -> MinIO": (train_node, minio, 9000),
        "predictor -> MinIO (storage initializer)": (predictor, minio, 9000),
        "pipeline task -> MLflow": (pipeline_task, mlflow, 5000), "TrainJob node -> MLflow": (train_node, mlflow, 5000),
        "MLflow -> Postgres": (mlflow, postgres, 5432), "ingress gateway -> predictor": (gateway, predictor, 8080),
    }
    refused = {
        "predictor -> MLflow": (predictor, mlflow, 5000), "predictor -> Postgres": (predictor, postgres, 5432),
        "pipeline task -> Postgres": (pipeline_task, postgres, 5432),
        "pipeline task -> predictor": (pipeline_task, predictor, 8080),
        "other namespace -> predictor": (stranger, predictor, 8080),
        "other namespace -> MinIO": (stranger, minio, 9000), "other namespace -> MLflow": (stranger, mlflow, 5000),
        "ingress gateway -> MinIO": (gateway, minio, 9000), "ingress gateway -> MLflow": (gateway, mlflow, 5000),
        "pipeline task -> MinIO console": (pipeline_task, minio, 9001), "setup Job -> MLflow": (setup, mlflow, 5000),
        "MinIO -> outside": (minio, outside, 443), "MLflow -> outside": (mlflow, outside, 443),
        "predictor -> outside": (predictor, outside, 443), "setup Job -> outside": (setup, outside, 443),
    }
    wrong = [f"{name}: refused" for name, (s, d, port) in admitted.items() if not connects(rendered, s, d, port, extra=extra)]
    wrong += [f"{name}: admitted" for name, (s, d, port) in refused.items() if connects(rendered, s, d, port, extra=extra)]
    # Name lookups work from every pod of ours.
    wrong += [f"{pod.what} -> DNS: refused" for pod in pods
              if not connects(rendered, Peer(pod.namespace, tuple(sorted(pod.labels.items()))), outside, 53, "UDP")]
    assert not wrong, "\n".join(wrong)


def test_network_check_catches_an_open_policy(build):
    objects = list(copy.deepcopy(build("overlays/local")))
    minio = Peer(MINIO_NAMESPACE, (("app.kubernetes.io/name", "minio"),))
    stranger = Peer("default", (("app", "other"),))
    assert not connects(objects, stranger, minio, 9000)
    objects.append({"kind": "NetworkPolicy", "metadata": {"name": "open", "namespace": MINIO_NAMESPACE},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}})
    assert connects(objects, stranger, minio, 9000)


# ---- RBAC ----------------------------------------------------------------------------------------

def rbac_problems(objects) -> tuple[list[str], set]:
    """Grants beyond the allow-list (wildcards, RBAC escalation, Secrets, making pods), and the
    allow-list entries that were used."""
    problems, used = [], set()
    for role in find(objects, "Role") + find(objects, "ClusterRole"):
        where = (role["kind"], role["metadata"].get("namespace"), role["metadata"]["name"])
        for rule in role.get("rules", []):
            groups, resources, verbs = set(rule.get("apiGroups", [])), set(rule.get("resources", [])), set(rule["verbs"])
            if "*" in groups | resources | verbs:
                problems.append(f"{where}: a wildcard in {rule}")
            if verbs & {"escalate", "bind", "impersonate"}:
                problems.append(f"{where}: {sorted(verbs & {'escalate', 'bind', 'impersonate'})}")
            if "" in groups and "secrets" in resources:
                problems.append(f"{where}: reads or writes Secrets")
            for group in groups:
                for resource in resources:
                    making = verbs & MAKING_VERBS if (group, resource) in POD_MAKING else set()
                    if resource in {"pods/exec", "pods/attach"} and (group, resource) in POD_MAKING:
                        making = verbs  # exec and attach run in a pod whatever the verb
                    if not making:
                        continue
                    allowed, _ = POD_MAKING_GRANTS.get((*where, group, resource), (set(), ""))
                    if making - allowed:
                        problems.append(f"{where}: {sorted(making - allowed)} {group or 'core'}/{resource}")
                    else:
                        used.add((*where, group, resource))
    return problems, used


def test_no_role_makes_pods_beyond_the_allow_list(rendered):
    problems, used = rbac_problems(rendered)
    assert not problems, "\n".join(problems)
    assert used == set(POD_MAKING_GRANTS), f"allow-list entries no Role uses: {set(POD_MAKING_GRANTS) - used}"
    assert all(reason for _, reason in POD_MAKING_GRANTS.values())


@pytest.mark.parametrize("rule", [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["patch"]},
    {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"], "verbs": ["update"]},
    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
])
def test_rbac_check_catches_a_pod_making_grant(build, rule):
    objects = copy.deepcopy(build("overlays/local"))
    one(objects, "Role", "interactavatar-deployer", SERVING_NAMESPACE)["rules"].append(rule)
    assert rbac_problems(objects)[0]
