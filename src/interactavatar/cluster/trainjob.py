"""Multi-node training: one training stage as a Kubeflow Trainer v2 TrainJob, launched and awaited by
its pipeline task.

The task (the launcher) copies the stage's input folders to an S3 staging prefix, creates a TrainJob
(trainer.kubeflow.org/v1alpha1) on a ClusterTrainingRuntime (`interactavatar-torch`, k8s/training/,
whose pod template holds the pods' security settings), waits for its Complete or Failed condition,
and fetches the model directory the job published into the task's output artifact. Every node of
the job runs

    interactavatar trainjob node --input data=s3://.../inputs/data ... --output out=s3://.../output \\
        --checkpoints out/checkpoints=s3://.../checkpoints \\
        -- torchrun -m interactavatar.cli train <stage> --data data ... --out out

which downloads the inputs, restores the last checkpoint published under the job's checkpoint
prefix, trains with the same arguments the task would have used in-process (torchrun takes its
rendezvous from the PET_* variables the Trainer's torch runtime sets) while every checkpoint is
mirrored to that prefix (`interactavatar.train.checkpoint_mirror`), and, on node 0 (global rank 0,
which writes the model directory), uploads the model directory. The prefix is fixed by the task's
output, so nodes the Trainer restarts on fresh disks, and the job a retried task launches after a
failed one, resume from the last checkpoint that reached S3 from every node.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from interactavatar.cluster.names import (
    ENDPOINT_KEYS,
    ENDPOINTS_CONFIG_MAP,
    S3_SECRET,
    S3_SECRET_KEYS,
    TRAINER_RUNTIME,
)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
# The stage's input folders (StageSpec fields) that the nodes download, and the folder they train
# into, relative to the node's working directory (the image's home folder).
INPUT_FOLDERS = ("data", "vae", "pim", "audio")
OUTPUT_FOLDER = "out"
# The checkpoints' folder inside the output folder: mirrored to the job's checkpoint prefix, left
# out of the model directory (DeepSpeed's per-rank shards are of no use to the next stage).
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TrainJobSettings:
    """Where and how a stage trains: in its own process (num_nodes 1) or as a TrainJob.

    num_nodes: training nodes; 1 trains in the calling process.
    gpus_per_node: GPUs each node asks for (0: CPU nodes); one torchrun process per GPU.
    runtime: the ClusterTrainingRuntime the job runs on; its pod template carries the pods' security
        settings and tolerations, which a TrainJob cannot set (`interactavatar-torch`, k8s/training/).
    namespace: where the job runs; the S3 Secret and the endpoints ConfigMap must be there.
    image: the nodes' container image (the project image the pipeline's tasks run in).
    staging_uri: s3:// prefix for the job's inputs, checkpoints and published model directory.
    timeout_s: how long to wait for the job to complete before deleting it.
    """

    num_nodes: int = 1
    gpus_per_node: int = 1
    runtime: str = TRAINER_RUNTIME
    namespace: str = "kubeflow"
    image: str = ""
    staging_uri: str = "s3://models/trainjobs"
    timeout_s: float = 72 * 3600.0

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes: {self.num_nodes} must be at least 1")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node: {self.gpus_per_node} must not be negative")
        if self.num_nodes > 1:
            for name in ("runtime", "namespace", "image"):
                if not getattr(self, name):
                    raise ValueError(f"{name}: required to train on {self.num_nodes} nodes")
            if not self.staging_uri.startswith("s3://"):
                raise ValueError(f"staging_uri: {self.staging_uri!r} is not an s3:// URI")


def job_name(stage: str, output_uri: str) -> str:
    """A name fixed by the task's output artifact: a retried task finds the job its previous
    attempt launched instead of starting another (RFC 1035 label, as TrainJob names must be)."""
    digest = hashlib.sha256(output_uri.encode()).hexdigest()[:10]
    return f"interactavatar-{stage}-{digest}"


def train_arguments(spec, folders: dict[str, str]) -> list[str]:
    """The `interactavatar train` arguments that rebuild `spec` with its folders renamed to
    `folders` (data, out, and the inputs the stage needs).

    A setting the command line cannot carry is refused by name rather than silently dropped
    (`train.commands.spec_to_argv`).
    """
    from interactavatar.train.commands import spec_to_argv

    return spec_to_argv(dataclasses.replace(spec, **{name: Path(folder) for name, folder in folders.items()}))


def build_train_job(name: str, settings: TrainJobSettings, train_args: list[str], inputs: dict[str, str],
                    output_uri: str, checkpoints_uri: str) -> dict:
    """The TrainJob: `settings.num_nodes` nodes of the project image on `settings.runtime`, each
    running the node command below with the S3 keys and endpoints the pipeline's tasks get. Built
    from the Kubeflow Trainer's typed models (kubeflow-trainer-api), which refuse a missing or
    mistyped field here rather than in the API server; returned as the JSON body to send."""
    from kubeflow_trainer_api import models as trainer

    from interactavatar.serve.isvc import GPU_RESOURCE

    command = ["interactavatar", "trainjob", "node"]
    for folder, uri in inputs.items():
        command += ["--input", f"{folder}={uri}"]
    command += ["--output", f"{OUTPUT_FOLDER}={output_uri}", "--checkpoints",
                f"{OUTPUT_FOLDER}/{CHECKPOINTS}={checkpoints_uri}", "--", "torchrun", "-m", "interactavatar.cli",
                *train_args]
    env = [trainer.IoK8sApiCoreV1EnvVar(name=key, value_from=trainer.IoK8sApiCoreV1EnvVarSource(
               secret_key_ref=trainer.IoK8sApiCoreV1SecretKeySelector(name=S3_SECRET, key=key)))
           for key in S3_SECRET_KEYS]
    env += [trainer.IoK8sApiCoreV1EnvVar(name=key, value_from=trainer.IoK8sApiCoreV1EnvVarSource(
                config_map_key_ref=trainer.IoK8sApiCoreV1ConfigMapKeySelector(name=ENDPOINTS_CONFIG_MAP, key=key)))
            for key in ENDPOINT_KEYS]
    resources = None
    if settings.gpus_per_node:
        gpus = {GPU_RESOURCE: trainer.IoK8sApimachineryPkgApiResourceQuantity(str(settings.gpus_per_node))}
        resources = trainer.IoK8sApiCoreV1ResourceRequirements(requests=gpus, limits=gpus)
    job = trainer.TrainerV1alpha1TrainJob(
        api_version=f"{GROUP}/{VERSION}",
        kind="TrainJob",
        metadata=trainer.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, namespace=settings.namespace, labels={"app.kubernetes.io/part-of": "interactavatar"}),
        spec=trainer.TrainerV1alpha1TrainJobSpec(
            runtime_ref=trainer.TrainerV1alpha1RuntimeRef(name=settings.runtime),
            trainer=trainer.TrainerV1alpha1Trainer(
                image=settings.image, command=command, env=env, num_nodes=settings.num_nodes,
                # One process per GPU; one per CPU node (torch's "auto" would start one per core there).
                num_proc_per_node=max(settings.gpus_per_node, 1), resources_per_node=resources)),
    )
    return job.to_dict()


def run_stage_as_train_job(spec, settings: TrainJobSettings, output_uri: str) -> Path:
    """Train `spec` on `settings.num_nodes` nodes and put its model directory in `spec.out`.

    `output_uri` identifies the calling task's output (its artifact URI) and names the job. A job of
    that name that is still running or complete is awaited, not launched again; a failed one is
    deleted and launched anew (the task is being retried), and the new one resumes from the
    checkpoints the failed one mirrored.
    """
    from interactavatar.cluster.k8s import custom_objects_api
    from interactavatar.io.storage import client, download_folder, remove_prefix, upload_folder

    name = job_name(spec.stage, output_uri)
    staging = f"{settings.staging_uri.rstrip('/')}/{name}"
    local_inputs = {folder: getattr(spec, folder) for folder in INPUT_FOLDERS if getattr(spec, folder) is not None}
    # Refuses a setting the nodes' command line cannot carry before anything is uploaded or created.
    train_args = train_arguments(spec, {folder: folder for folder in local_inputs} | {"out": OUTPUT_FOLDER})
    api = custom_objects_api()
    s3 = client()
    existing = _read(api, settings.namespace, name)
    if existing is not None and _condition(existing, "Failed"):
        _delete(api, settings.namespace, name)
        existing = None
    if existing is None:
        # The checkpoints stay: they are what a relaunched job resumes from.
        remove_prefix(s3, f"{staging}/inputs")
        remove_prefix(s3, f"{staging}/output")
        inputs = {folder: f"{staging}/inputs/{folder}" for folder in local_inputs}
        for folder, local in local_inputs.items():
            upload_folder(s3, local, inputs[folder])
        body = build_train_job(name, settings, train_args, inputs, f"{staging}/output", f"{staging}/{CHECKPOINTS}")
        # Strict: the API server refuses a field the TrainJob schema lacks instead of dropping it.
        api.create_namespaced_custom_object(GROUP, VERSION, settings.namespace, PLURAL, body,
                                            field_validation="Strict")
    wait_for_train_job(api, settings.namespace, name, settings.timeout_s)
    try:
        download_folder(s3, f"{staging}/output", spec.out)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"TrainJob {settings.namespace}/{name} completed but published no model "
                                f"directory under {staging}/output (does its runtime run the job's command?)") from err
    # The inputs are copies of artifacts KFP keeps, and the checkpoints are of no use once the model
    # is out; the published output stays for a retried task.
    remove_prefix(s3, f"{staging}/inputs")
    remove_prefix(s3, f"{staging}/{CHECKPOINTS}")
    return spec.out


def wait_for_train_job(api, namespace: str, name: str, timeout_s: float) -> dict:
    """The job once it is Complete. Raises RuntimeError with the Trainer's reason and message when
    it Failed, and TimeoutError (after deleting the job, which would otherwise hold its GPUs) when
    it did neither within `timeout_s`."""
    for job in _states(api, namespace, name, timeout_s):
        if job is None:
            raise RuntimeError(f"TrainJob {namespace}/{name} was deleted while the pipeline waited for it")
        if _condition(job, "Complete"):
            return job
        failed = _condition(job, "Failed")
        if failed:
            raise RuntimeError(f"TrainJob {namespace}/{name} failed: {failed.get('reason', 'no reason')}: "
                               f"{failed.get('message', 'no message')}")
    _delete(api, namespace, name)
    raise TimeoutError(f"TrainJob {namespace}/{name}: neither Complete nor Failed after {timeout_s:.0f} s; "
                       "deleted it")


def _states(api, namespace: str, name: str, timeout_s: float):
    """The job now and after each change the API server reports (None once it is gone), for
    `timeout_s` seconds. A watch rather than polling: a days-long wait makes one request per five
    minutes, and the end of a job is seen the moment the Trainer records it."""
    from kubernetes import watch
    from kubernetes.client.rest import ApiException

    deadline = time.monotonic() + timeout_s
    yield _read(api, namespace, name)
    while (remaining := deadline - time.monotonic()) > 0:
        window = max(1, round(min(remaining, 300)))
        try:
            for event in watch.Watch().stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                              field_selector=f"metadata.name={name}", timeout_seconds=window,
                                              _request_timeout=window + 30):
                yield None if event["type"] == "DELETED" else event["object"]
                if time.monotonic() >= deadline:
                    return
        except ApiException as err:
            if err.status != 410:  # 410: the watch expired; read afresh and watch again
                raise
        # The server ended the watch: read the job, in case it changed between two watches.
        yield _read(api, namespace, name)


def _condition(job: dict, kind: str) -> dict | None:
    for condition in job.get("status", {}).get("conditions", []):
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _read(api, namespace: str, name: str) -> dict | None:
    from kubernetes.client.rest import ApiException

    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _delete(api, namespace: str, name: str, timeout_s: float = 600.0) -> None:
    """Delete the job with its pods, and return once it is gone (a new one may then take its name)."""
    from kubernetes.client.rest import ApiException

    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                            propagation_policy="Foreground")
    except ApiException as err:
        if err.status != 404:
            raise
    for job in _states(api, namespace, name, timeout_s):
        if job is None:
            return
    raise TimeoutError(f"TrainJob {namespace}/{name}: still there {timeout_s:.0f} s after its deletion")


def run_node(inputs: dict[str, str], outputs: dict[str, str], checkpoints: tuple[str, str] | None,
             command: list[str]) -> int:
    """One node of a TrainJob: download `inputs` (folder -> s3:// URI) into the working directory,
    restore `checkpoints` (folder, s3:// URI of its mirror) and run `command` with that mirror, and
    on node 0 upload each of `outputs` (folder -> s3:// URI) without its checkpoints. Returns the
    command's exit status."""
    from interactavatar.io.storage import client, download_folder, upload_folder
    from interactavatar.train.checkpoint import MIRROR_ENV
    from interactavatar.train.checkpoint_mirror import CheckpointMirror

    s3 = client()
    for folder, uri in inputs.items():
        download_folder(s3, uri, folder)
    env = dict(os.environ)
    if checkpoints is not None:
        folder, uri = checkpoints
        tag = CheckpointMirror(uri).restore(folder)
        print(f"trainjob node: {f'resuming from {tag}' if tag else 'no checkpoint yet'} under {uri}", file=sys.stderr,
              flush=True)
        env[MIRROR_ENV] = uri
    status = subprocess.run(command, env=env).returncode
    # The Trainer's torch runtime numbers the nodes; node 0 holds global rank 0, the one that
    # writes the model directory.
    if status == 0 and os.environ.get("PET_NODE_RANK", "0") == "0":
        for folder, uri in outputs.items():
            upload_folder(s3, folder, uri, exclude=(CHECKPOINTS,))
    return status


def _folder_uri(pair: str) -> tuple[str, str]:
    folder, sep, uri = pair.partition("=")
    if not sep or not folder or not uri.startswith("s3://"):
        raise argparse.ArgumentTypeError(f"{pair!r}: expected FOLDER=s3://bucket/prefix")
    return folder, uri


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    trainjob = subparsers.add_parser("trainjob", help="multi-node training as a Kubeflow Trainer TrainJob")
    commands = trainjob.add_subparsers(dest="trainjob_command", required=True)
    node = commands.add_parser("node", help="one node of a TrainJob (the job's command; not run by hand)")
    node.add_argument("--input", type=_folder_uri, action="append", default=[], metavar="FOLDER=S3_URI",
                      help="download S3_URI into FOLDER before training")
    node.add_argument("--output", type=_folder_uri, action="append", default=[], metavar="FOLDER=S3_URI",
                      help="after training, node 0 uploads FOLDER (without checkpoints/) to S3_URI")
    node.add_argument("--checkpoints", type=_folder_uri, metavar="FOLDER=S3_URI",
                      help="restore FOLDER from the checkpoint mirror S3_URI before training, mirror it there during")
    node.add_argument("command", nargs=argparse.REMAINDER, help="-- then the training command")
    node.set_defaults(func=node_command)


def node_command(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ValueError("trainjob node: no training command after --")
    return run_node(dict(args.input), dict(args.output), args.checkpoints, command)
