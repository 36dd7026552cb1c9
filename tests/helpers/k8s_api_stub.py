"""A stand-in for a Kubernetes API server with KServe installed, on 127.0.0.1: neither can run here
(no cluster). It serves what the kserve SDK's `KServeClient` uses of the InferenceService
collection (get, create, JSON merge patch), checks every object it is sent against the
InferenceService schema (k8s_schema.py: 422 Invalid, or 400 under `fieldValidation=Strict`, as an
API server answers; unknown fields otherwise dropped with a warning), keeps `metadata.generation`
as the API server does (1 on create, one more for each change of `spec`), records every request,
and plays KServe's controller through `controller(stub, isvc)`, called after each write:

- `becomes_ready`: KServe saw the generation and the predictor is up (Ready True);
- `fails_to_load(reason, message)`: the storage initializer or the server could not load the model
  (modelStatus BlockedByFailedLoad, Ready False);
- `stays_unavailable`: the predictor's Deployment never reaches its minimum (Ready False).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import yaml

from helpers.json_stub import JSONStubHandler
from helpers.k8s_schema import prune, refusal, status_body

COLLECTION = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?$")
MERGE_PATCH = "application/merge-patch+json"


def write_kubeconfig(path, server_url: str):
    """A kubeconfig whose one context points at `server_url` (a stub: the token is no secret)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stub",
        "clusters": [{"name": "stub", "cluster": {"server": server_url}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
        "users": [{"name": "stub", "user": {"token": "not-a-secret"}}],
    }))
    return path


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: what the API server does with application/merge-patch+json."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


class InferenceServiceAPIStub:
    def __init__(self, controller):
        self.controller = controller
        self.objects: dict[tuple[str, str], dict] = {}
        # (method, path, query, body) of every request, refused ones included.
        self.requests: list[tuple[str, str, dict, dict | None]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> InferenceServiceAPIStub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()

    def write_kubeconfig(self, path):
        return write_kubeconfig(path, self.url)

    def methods(self) -> list[str]:
        return [method for method, _, _, _ in self.requests]

    def get(self, namespace: str, name: str) -> dict:
        with self._lock:
            return json.loads(json.dumps(self.objects[(namespace, name)]))

    def set_status(self, isvc: dict, status: dict) -> None:
        """KServe's controller writing the status of the generation it saw in `isvc`."""
        key = (isvc["metadata"]["namespace"], isvc["metadata"]["name"])
        with self._lock:
            self.objects[key]["status"] = {"observedGeneration": isvc["metadata"]["generation"], **status}

    def store(self, obj: dict, previous: dict | None) -> dict:
        """What the API server keeps of `obj`: identity, resourceVersion and generation, the status
        kept. Returns a copy."""
        obj = json.loads(json.dumps(obj))
        metadata = obj["metadata"]
        if previous is None:
            metadata.update(uid=str(uuid.uuid4()), generation=1,
                            creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        else:
            old = previous["metadata"]
            metadata.update(uid=old["uid"], creationTimestamp=old["creationTimestamp"],
                            generation=old["generation"] + (obj.get("spec") != previous.get("spec")))
            if "status" in previous:
                obj["status"] = previous["status"]
        metadata["resourceVersion"] = str(int(time.monotonic_ns()))
        with self._lock:
            self.objects[(metadata["namespace"], metadata["name"])] = obj
        return json.loads(json.dumps(obj))


def becomes_ready(stub: InferenceServiceAPIStub, isvc: dict) -> None:
    stub.set_status(isvc, {
        "url": f"http://{isvc['metadata']['name']}.{isvc['metadata']['namespace']}.example.com",
        "modelStatus": {"transitionStatus": "UpToDate", "states": {"activeModelState": "Loaded"}},
        "conditions": [{"type": t, "status": "True"} for t in ("IngressReady", "PredictorReady", "Ready")]})


def fails_to_load(reason: str, message: str):
    def controller(stub: InferenceServiceAPIStub, isvc: dict) -> None:
        stub.set_status(isvc, {
            "modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                            "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
                            "lastFailureInfo": {"reason": reason, "message": message}},
            "conditions": [{"type": "PredictorReady", "status": "False", "reason": reason, "message": message},
                           {"type": "Ready", "status": "False", "reason": reason, "message": message}]})
    return controller


def stays_unavailable(stub: InferenceServiceAPIStub, isvc: dict) -> None:
    message = "Deployment does not have minimum availability."
    stub.set_status(isvc, {
        "modelStatus": {"transitionStatus": "InProgress", "states": {"targetModelState": "Pending"}},
        "conditions": [{"type": "PredictorReady", "status": "False", "reason": "MinimumReplicasUnavailable",
                        "message": message},
                       {"type": "Ready", "status": "False", "reason": "MinimumReplicasUnavailable",
                        "message": message}]})


def _handler(stub: InferenceServiceAPIStub):
    class Handler(JSONStubHandler):
        def _request(self, method: str) -> tuple[re.Match | None, dict, dict | None]:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            stub.requests.append((method, url.path, query, body))
            match = COLLECTION.match(url.path)
            if match is None:
                self._answer(404, status_body(404, "NotFound", f"the server could not find {url.path}"))
            return match, query, body

        def _not_found(self, name: str) -> None:
            self._answer(404, status_body(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found'))

        def _accept(self, code: int, obj: dict, previous: dict | None) -> None:
            pruned, unknown = prune(obj)
            stored = stub.store(pruned, previous)
            data = json.dumps(stored).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            for path in unknown:  # fieldValidation Warn, the default: dropped, with a warning
                self.send_header("Warning", f'299 - "unknown field \\"{path}\\""')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            threading.Thread(target=stub.controller, args=(stub, stored), daemon=True).start()

        def do_GET(self):  # noqa: N802
            match, _, _ = self._request("GET")
            if match is None:
                return
            namespace, name = match[1], match[2]
            with stub._lock:
                obj = stub.objects.get((namespace, name))
            return self._answer(200, obj) if obj else self._not_found(name)

        def do_POST(self):  # noqa: N802
            match, query, body = self._request("POST")
            if match is None:
                return
            body.setdefault("metadata", {}).setdefault("namespace", match[1])
            if (refused := refusal(body, query.get("fieldValidation"))) is not None:
                return self._answer(*refused)
            key = (match[1], body["metadata"]["name"])
            if key in stub.objects:
                return self._answer(409, status_body(409, "AlreadyExists",
                                                     f'inferenceservices.serving.kserve.io "{key[1]}" already exists'))
            self._accept(201, body, None)

        def do_PATCH(self):  # noqa: N802
            match, query, patch = self._request("PATCH")
            if match is None:
                return
            if self.headers.get("Content-Type") != MERGE_PATCH:
                return self._answer(415, status_body(415, "UnsupportedMediaType",
                                                     f"the stub applies {MERGE_PATCH} only"))
            namespace, name = match[1], match[2]
            with stub._lock:
                previous = stub.objects.get((namespace, name))
            if previous is None:
                return self._not_found(name)
            merged = merge_patch(json.loads(json.dumps(previous)), patch)
            if (refused := refusal(merged, query.get("fieldValidation"))) is not None:
                return self._answer(*refused)
            self._accept(200, merged, previous)

        def log_message(self, *args):
            pass

    return Handler
