"""Schema checks for the custom resources that no offline OpenAPI schema covers, and the answers a
Kubernetes API server gives when a request breaks them.

No CRD YAML of KServe or Kubeflow Trainer is available offline, so the schemas come from their
typed models: KServe's kinds from the kserve SDK's model classes, a TrainJob from
kubeflow-trainer-api's (generated from the Trainer's OpenAPI spec). `check` sorts what is wrong
into unknown fields (an API server drops them, with a warning, or refuses the request with 400
under `fieldValidation=Strict`) and invalid values or missing required fields (refused with 422
Invalid). Used on the rendered manifests (tests/infra/test_kustomize.py) and by the API server
stubs on every object they are sent (k8s_api_stub.py, trainer_api_stub.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import kserve
import kubernetes.client
import pydantic
from kubeflow_trainer_api import models as trainer_models

SDK_MODELS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): kserve.V1beta1InferenceService,
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): kserve.V1alpha1ServingRuntime,
}
TRAIN_JOB = ("trainer.kubeflow.org/v1alpha1", "TrainJob")


@dataclass
class Violations:
    unknown: list[str] = field(default_factory=list)  # paths of fields the schema does not have
    invalid: list[str] = field(default_factory=list)  # "path: why" for values the schema refuses


def check(obj: dict) -> Violations:
    """What is wrong with `obj` (without its status, which clients do not write) for its kind."""
    kind = (obj.get("apiVersion"), obj.get("kind"))
    body = {key: value for key, value in obj.items() if key != "status"}
    if kind in SDK_MODELS:
        violations = Violations()
        try:
            rebuild_sdk_object(body, SDK_MODELS[kind].__name__, obj.get("kind"), violations)
        except ValueError as refused:  # a required field missing, or a value the model's setter refuses
            violations.invalid.append(str(refused))
        return violations
    if kind == TRAIN_JOB:
        return _check_train_job(body)
    raise KeyError(f"no schema for {kind}")


def rebuild_sdk_object(value, type_name: str, path: str, violations: Violations):
    """The kserve (or kubernetes) SDK object for `value` typed `type_name`; unknown fields and
    mistyped values are added to `violations`."""
    if value is None:
        return None
    if match := re.fullmatch(r"list\[(.+)\]", type_name):
        return [rebuild_sdk_object(v, match[1], f"{path}[{i}]", violations) for i, v in enumerate(value)]
    if match := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        return {k: rebuild_sdk_object(v, match[1], f"{path}.{k}", violations) for k, v in value.items()}
    if type_name in {"str", "int", "bool", "float", "object", "datetime"}:
        expected = {"str": str, "int": int, "bool": bool}.get(type_name)
        if expected is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
            violations.invalid.append(f"{path}: {value!r} is not {type_name}")
        return value
    klass = getattr(kserve, type_name, None) or getattr(kubernetes.client, type_name)
    if not isinstance(value, dict):
        violations.invalid.append(f"{path}: {value!r} is not an object ({type_name})")
        return None
    by_json_name = {json_name: attr for attr, json_name in klass.attribute_map.items()}
    kwargs = {}
    for key, field_value in value.items():
        if key not in by_json_name:
            violations.unknown.append(f"{path}.{key}")
            continue
        attr = by_json_name[key]
        kwargs[attr] = rebuild_sdk_object(field_value, klass.openapi_types[attr], f"{path}.{key}", violations)
    try:
        return klass(**kwargs)
    except ValueError as refused:
        violations.invalid.append(f"{path}: {refused}")
        return None


def _check_train_job(body: dict) -> Violations:
    violations = Violations()
    try:
        kept = trainer_models.TrainerV1alpha1TrainJob.from_dict(body).to_dict()
    except pydantic.ValidationError as refused:
        for error in refused.errors():
            where = ".".join(str(part) for part in error["loc"])
            violations.invalid.append(f"{refused.title}.{where}: {error['msg']}")
        return violations
    # The typed models ignore what they do not know: a field the round trip lost is unknown.
    violations.unknown += _lost(body, kept, "TrainJob")
    return violations


def _lost(sent, kept, path: str) -> list[str]:
    if isinstance(sent, dict) and isinstance(kept, dict):
        lost = []
        for key, value in sent.items():
            if value is None:
                continue
            if key not in kept:
                lost.append(f"{path}.{key}")
            else:
                lost += _lost(value, kept[key], f"{path}.{key}")
        return lost
    if isinstance(sent, list) and isinstance(kept, list):
        return [p for i, (s, k) in enumerate(zip(sent, kept, strict=True)) for p in _lost(s, k, f"{path}[{i}]")]
    return []


def status_body(code: int, reason: str, message: str) -> dict:
    """A Kubernetes `Status` object, as the API server answers a refused request."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def refusal(obj: dict, field_validation: str | None) -> tuple[int, dict] | None:
    """How an API server answers a request carrying `obj`: (status code, Status) when it refuses
    it, None when it accepts it; unknown fields are then dropped (`prune`)."""
    violations = check(obj)
    kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
    if violations.invalid:
        return 422, status_body(422, "Invalid", f"{kind} {name!r} is invalid: {'; '.join(violations.invalid)}")
    if violations.unknown and field_validation == "Strict":
        fields = ", ".join(f'unknown field "{path}"' for path in violations.unknown)
        return 400, status_body(400, "BadRequest", f"{kind} in version {obj.get('apiVersion')} cannot be handled "
                                                   f"as a {kind}: strict decoding error: {fields}")
    return None


def prune(obj: dict) -> tuple[dict, list[str]]:
    """`obj` without the fields its schema lacks (what an API server stores), and their paths."""
    unknown = check(obj).unknown
    pruned = _copy(obj)
    for path in unknown:
        parts = re.findall(r"\.([^.\[]+)|\[(\d+)\]", path[path.index("."):])
        holder = pruned
        for key, index in parts[:-1]:
            holder = holder[int(index)] if index else holder[key]
        last_key, last_index = parts[-1]
        del holder[int(last_index) if last_index else last_key]
    return pruned, unknown


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
