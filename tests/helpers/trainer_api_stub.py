"""A stand-in for a Kubernetes API server with Kubeflow Trainer installed, on 127.0.0.1: neither can
run here (no cluster, no container runtime). It serves what the launcher uses of the TrainJob
collection (create, get, delete, watch by name), records every request, checks every TrainJob it
is sent against the TrainJob schema (k8s_schema.py, from kubeflow-trainer-api's typed models: 422
Invalid, or 400 for an unknown field under `fieldValidation=Strict`, as an API server answers),
and plays the Trainer controller's part through `on_create(stub, job)`:

- `run_nodes`: start every node the TrainJob asks for as a local process, with the job's command and
  the environment the Trainer gives a node (its env with the Secret and ConfigMap keys resolved, the
  torch runtime's PET_* rendezvous variables), each in a folder of its own that no earlier launch
  used, as on a fresh machine; then mark the job Complete, or Failed with the nodes' exit codes;
- `preempt_when(event)`: start the nodes likewise, and once `event()` holds SIGKILL every process
  of every node (a preemption, a lost node); the job then fails with the nodes' exit codes;
- `fail_with(reason, message)`: mark the job Failed at once;
- `complete_without_running`: mark it Complete at once (a runtime that ignored the job's command);
- `never_finish`: leave it running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psutil

from helpers.json_stub import JSONStubHandler
from helpers.k8s_api_stub import write_kubeconfig
from helpers.k8s_schema import prune, refusal
from interactavatar.train.engine import free_port

COLLECTION = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$")
# The launching process's own settings must not reach the nodes: they get the job's env only.
NOT_INHERITED = re.compile(r"^(AWS_|MLFLOW_|MINIO_|S3_|KUBECONFIG$|MASTER_|RANK$|WORLD_SIZE$|LOCAL_RANK$)")


class TrainerAPIStub:
    def __init__(self, root: Path, secrets: dict[str, dict[str, str]], config_maps: dict[str, dict[str, str]],
                 on_create):
        self.root, self.secrets, self.config_maps, self.on_create = Path(root), secrets, config_maps, on_create
        self.jobs: dict[str, dict] = {}
        self.launches: dict[str, int] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.changed = threading.Condition()
        self._version = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> TrainerAPIStub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()

    def write_kubeconfig(self, path: Path) -> Path:
        return write_kubeconfig(path, self.url)

    def methods(self) -> list[str]:
        return [f"{method} {path}" for method, path, _ in self.requests]

    def created(self) -> list[dict]:
        return [body for method, _, body in self.requests if method == "POST"]

    # The Trainer controller's part.
    def store(self, job: dict) -> None:
        with self.changed:
            self._version += 1
            job["metadata"]["resourceVersion"] = str(self._version)
            self.jobs[job["metadata"]["name"]] = job
            self.changed.notify_all()

    def set_condition(self, name: str, kind: str, reason: str, message: str) -> None:
        with self.changed:
            job = json.loads(json.dumps(self.jobs[name]))
        job.setdefault("status", {}).setdefault("conditions", []).append(
            {"type": kind, "status": "True", "reason": reason, "message": message,
             "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self.store(job)

    def node_environment(self, job: dict, rank: int, master_port: int) -> dict[str, str]:
        trainer = job["spec"]["trainer"]
        env = {k: v for k, v in os.environ.items() if not NOT_INHERITED.match(k)}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the image's commands
        for var in trainer.get("env", []):
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = var["value"]
            elif "secretKeyRef" in source:
                env[var["name"]] = self.secrets[source["secretKeyRef"]["name"]][source["secretKeyRef"]["key"]]
            else:
                env[var["name"]] = self.config_maps[source["configMapKeyRef"]["name"]][source["configMapKeyRef"]["key"]]
        # The torch runtime's rendezvous. One process per node: this machine has no GPU, and on a
        # CPU node torchrun would otherwise start a process per core.
        env.update(PET_NNODES=str(trainer["numNodes"]), PET_NPROC_PER_NODE="1", PET_NODE_RANK=str(rank),
                   PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(master_port))
        return env


def run_nodes(stub: TrainerAPIStub, job: dict) -> None:
    nodes = _start_nodes(stub, job)
    if nodes is not None:
        _finish(stub, job, [process.wait(timeout=900) for process in nodes])


def preempt_when(event):
    def on_create(stub: TrainerAPIStub, job: dict) -> None:
        nodes = _start_nodes(stub, job)
        if nodes is None:
            return
        while not event() and any(process.poll() is None for process in nodes):
            time.sleep(0.05)
        # torchrun starts its workers in sessions of their own: every process is killed by its id.
        doomed = []
        for node in nodes:
            with contextlib.suppress(psutil.NoSuchProcess):
                doomed += [node, *node.children(recursive=True)]
        for process in doomed:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        # psutil reports a signal as an enum member: the Trainer reports the number.
        _finish(stub, job, [int(process.wait(timeout=60)) for process in nodes])
    return on_create


def node_folder(stub: TrainerAPIStub, name: str, launch: int, rank: int) -> Path:
    """Where node `rank` of the `launch`-th job of that name ran (its disk)."""
    return stub.root / name / f"launch-{launch}" / f"node-{rank}"


def _start_nodes(stub: TrainerAPIStub, job: dict) -> list[psutil.Popen] | None:
    name, trainer = job["metadata"]["name"], job["spec"]["trainer"]
    master_port = free_port()
    try:
        environments = [stub.node_environment(job, rank, master_port) for rank in range(trainer["numNodes"])]
    except KeyError as missing:
        stub.set_condition(name, "Failed", "CreateContainerConfigError", f"key {missing} not found")
        return None
    stub.launches[name] = launch = stub.launches.get(name, 0) + 1
    processes = []
    for rank, env in enumerate(environments):
        folder = node_folder(stub, name, launch, rank)
        folder.mkdir(parents=True)
        with open(folder.with_suffix(".log"), "wb") as log:
            processes.append(psutil.Popen(trainer["command"], cwd=folder, env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    return processes


def _finish(stub: TrainerAPIStub, job: dict, codes: list[int]) -> None:
    name = job["metadata"]["name"]
    if any(codes):
        logs = {rank: node_folder(stub, name, stub.launches[name], rank).with_suffix(".log").read_text()[-1500:]
                for rank in range(len(codes))}
        return stub.set_condition(name, "Failed", "NodesFailed", f"exit codes {codes}; logs {logs}")
    stub.set_condition(name, "Complete", "JobsCompleted", "all nodes succeeded")


def fail_with(reason: str, message: str):
    def on_create(stub: TrainerAPIStub, job: dict) -> None:
        stub.set_condition(job["metadata"]["name"], "Failed", reason, message)
    return on_create


def complete_without_running(stub: TrainerAPIStub, job: dict) -> None:
    stub.set_condition(job["metadata"]["name"], "Complete", "JobsCompleted", "all nodes succeeded")


def never_finish(stub: TrainerAPIStub, job: dict) -> None:
    pass


def _handler(stub: TrainerAPIStub):
    class Handler(JSONStubHandler):
        # A watch is a chunked response, as the API server streams it: HTTP/1.1.
        protocol_version = "HTTP/1.1"

        def _route(self):
            url = urlparse(self.path)
            match = COLLECTION.match(url.path)
            if match is None:
                self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": url.path})
                return None
            return match[1], match[2], {k: v[0] for k, v in parse_qs(url.query).items()}

        def _not_found(self, name: str) -> None:
            self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound",
                               "message": f'trainjobs.trainer.kubeflow.org "{name}" not found'})

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.requests.append(("POST", urlparse(self.path).path, body))
            if (route := self._route()) is None:
                return
            if (refused := refusal(body, route[2].get("fieldValidation"))) is not None:
                return self._answer(*refused)
            body = prune(body)[0]
            name = body["metadata"]["name"]
            if name in stub.jobs:
                return self._answer(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
            stub.store(json.loads(json.dumps(body)))
            self._answer(201, stub.jobs[name])
            threading.Thread(target=stub.on_create, args=(stub, stub.jobs[name]), daemon=True).start()

        def do_DELETE(self):  # noqa: N802
            stub.requests.append(("DELETE", urlparse(self.path).path, None))
            if (route := self._route()) is None:
                return
            name = route[1]
            with stub.changed:
                job = stub.jobs.pop(name, None)
                stub.changed.notify_all()
            if job is None:
                return self._not_found(name)
            self._answer(200, {"kind": "Status", "status": "Success"})

        def do_GET(self):  # noqa: N802
            route = self._route()
            stub.requests.append(("WATCH" if route and route[2].get("watch") else "GET", urlparse(self.path).path,
                                  None))
            if route is None:
                return
            _, name, query = route
            if name is not None:
                job = stub.jobs.get(name)
                return self._answer(200, job) if job else self._not_found(name)
            watched = query["fieldSelector"].removeprefix("metadata.name=")
            self._watch(watched, float(query.get("timeoutSeconds", 60)))

        def _watch(self, name: str, timeout_s: float) -> None:
            """Events for one job until the timeout, as the API server streams them (a line each)."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            deadline, sent = time.monotonic() + timeout_s, None
            with stub.changed:
                while True:
                    job = stub.jobs.get(name)
                    if job is not sent:
                        kind = "DELETED" if job is None else ("ADDED" if sent is None else "MODIFIED")
                        line = json.dumps({"type": kind, "object": job or sent}).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                        sent = job
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    stub.changed.wait(remaining)
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args):
            pass

    return Handler
