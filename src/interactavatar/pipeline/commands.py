"""`interactavatar pipeline compile|run|submit|schedule`: the KFP pipeline of
`interactavatar.pipeline.definition`, compiled, run on this machine with the KFP local runner, or
sent to a KFP API.

`compile` writes the files KFP users look for, committed at the repository's root (a test checks
they are current): pipelines/interactavatar_pipeline.yaml, and one component YAML per step under
components/ (loadable with `kfp.components.load_component_from_file`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from interactavatar.pipeline import containers

COMPILED = Path("pipelines") / "interactavatar_pipeline.yaml"
COMPONENTS_DIR = Path("components")


def load_pipeline():
    from interactavatar.pipeline.definition import interactavatar_pipeline

    return interactavatar_pipeline


def _compile_to(func, out: Path) -> Path:
    from kfp import compiler

    from interactavatar.io.files import atomic_path

    with atomic_path(out) as staging:
        compiler.Compiler().compile(func, str(staging))
    return out


def compile_pipeline(out: str | Path = COMPILED) -> Path:
    return _compile_to(load_pipeline(), Path(out))


def compile_components(folder: str | Path = COMPONENTS_DIR) -> list[Path]:
    """One YAML per component, named after it: the pipeline's steps for reuse in other pipelines."""
    from interactavatar.pipeline import components

    return [_compile_to(getattr(components, name), Path(folder) / f"{name}.yaml") for name in components.__all__]


def parse_params(pairs: list[str]) -> dict:
    """KEY=VALUE pairs for the pipeline's parameters, each value read as the type the pipeline
    declares for KEY (a String stays as written: data_rev=3 is "3"). An unknown KEY or a value
    that is not of its type is refused, naming it, before anything runs or is sent."""
    declared = load_pipeline().component_spec.inputs
    readers = {"String": str, "Integer": int, "Float": float, "Boolean": _boolean}
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r}: expected KEY=VALUE")
        if key not in declared:
            raise ValueError(f"--param {key}: not a parameter of the pipeline; it has {', '.join(declared)}")
        kind = declared[key].type
        try:
            params[key] = readers[kind](value)
        except ValueError as err:
            raise ValueError(f"--param {key}={value!r}: expected {kind}") from err
    return params


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


def validate_cron(expression: str) -> str:
    """KFP's scheduler reads six-field cron expressions (seconds first); a five-field crontab line
    would be read with its fields shifted, so it is refused here."""
    if len(expression.split()) != 6:
        raise ValueError(f"--cron {expression!r}: KFP cron expressions have six fields, seconds first "
                         '(e.g. "0 0 3 * * *" for 03:00 daily)')
    return expression


def run_local(params: dict, work: Path, runner: str = "subprocess") -> dict:
    """The whole pipeline on this machine: KFP's subprocess runner (no per-task venv) or, with
    runner "docker", every task in the project's image (pipeline/containers.py); MLflow from
    MLFLOW_TRACKING_URI (default: SQLite in work/), DVC from the given repository, the CPU."""
    import kfp.local
    import mlflow

    from interactavatar.config import EXPERIMENT
    from interactavatar.train.tracking import tracking_uri

    work = work.resolve()
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    # Each task leaves a temporary folder behind; keep them in the work folder.
    os.environ["TMPDIR"] = str(work / "tmp")
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    pipeline_root = work / "kfp"
    if runner == "docker":
        task_runner = containers.docker_runner()
        params = {**params, "data_repo": containers.data_repo_for_containers(params["data_repo"], pipeline_root)}
        containers.prepare_pipeline_root(pipeline_root)
    else:
        task_runner = kfp.local.SubprocessRunner(use_venv=False)
    kfp.local.init(runner=task_runner, pipeline_root=str(pipeline_root))
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(EXPERIMENT)
    started = time.perf_counter()
    with mlflow.start_run(run_name="pipeline", tags={"stage": "pipeline"}) as run:
        mlflow.log_params({f"pipeline.{k}": v for k, v in params.items()})
        load_pipeline()(**params, parent_run_id=run.info.run_id)
        wall = time.perf_counter() - started
        mlflow.log_metric("pipeline_wall_s", wall)
    return {"parent_run_id": run.info.run_id, "wall_s": round(wall, 1), "pipeline_root": str(pipeline_root),
            "tracking_uri": os.environ["MLFLOW_TRACKING_URI"]}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    pipeline = subparsers.add_parser("pipeline", help="the KFP training pipeline")
    commands = pipeline.add_subparsers(dest="pipeline_command", required=True)
    compile_ = commands.add_parser("compile", help="compile the pipeline and its components to YAML "
                                                   "(the committed files are checked by a test)")
    compile_.add_argument("--out", type=Path, default=COMPILED, help="the pipeline's YAML")
    compile_.add_argument("--components", type=Path, default=COMPONENTS_DIR, help="folder for the component YAMLs")
    compile_.set_defaults(func=run_compile)

    for name, help_text in (("run", "run the pipeline (--local: on this machine)"),
                            ("submit", "submit one run to a KFP API"),
                            ("schedule", "create a recurring run (cron) on a KFP API")):
        command = commands.add_parser(name, help=help_text)
        if name == "run":
            command.add_argument("--data-repo", default=".",
                                 help="git repository holding the DVC-tracked data (default: the current folder)")
        else:
            # The run's tasks clone it inside the cluster: a path on this machine means nothing there.
            command.add_argument("--data-repo", required=True,
                                 help="git URL of the repository holding the DVC-tracked data")
        command.add_argument("--data-rev", default="", help="git revision of the data (default: HEAD)")
        command.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                             help="any other pipeline parameter, e.g. preset=tiny or pim_steps=50")
        if name == "run":
            command.add_argument("--local", action="store_true", required=True)
            command.add_argument("--work", type=Path, default=Path("work"))
            command.add_argument("--runner", choices=containers.RUNNERS, default="subprocess",
                                 help="where the tasks run: processes on this machine, or the project's image "
                                      "under Docker or podman (DOCKER_HOST; build it with `make image`)")
            command.set_defaults(func=run_command)
        else:
            command.add_argument("--host", required=True, help="KFP API URL")
            command.add_argument("--experiment", default="interactavatar")
            if name == "schedule":
                command.add_argument("--cron", required=True, help='six fields, e.g. "0 0 3 * * *" (03:00 daily)')
                command.add_argument("--name", default="interactavatar-retraining")
            command.set_defaults(func=remote_command)


def _params(args: argparse.Namespace) -> dict:
    params = {"data_repo": args.data_repo, "data_rev": args.data_rev, **parse_params(args.param)}
    if getattr(args, "pipeline_command", None) == "schedule":
        # A recurring run retrains the champion on the new data (`--param init_model=` for scratch).
        params.setdefault("init_model", "champion")
    return params


def run_compile(args: argparse.Namespace) -> int:
    print(json.dumps({"pipeline": str(compile_pipeline(args.out)),
                      "components": [str(path) for path in compile_components(args.components)]}, indent=1))
    return 0


def run_command(args: argparse.Namespace) -> int:
    # The tasks run in folders of their own: hand them the repository as an absolute path.
    args.data_repo = str(Path(args.data_repo).resolve())
    print(json.dumps(run_local(_params(args), args.work, args.runner), indent=1))
    return 0


def remote_command(args: argparse.Namespace) -> int:
    """Compile the pipeline and send it to the KFP API at --host: one run, or a recurring run.
    Prints one JSON line on stdout; everything is checked before the first request."""
    import kfp

    if Path(args.data_repo).exists():
        raise ValueError(f"--data-repo {args.data_repo!r} is a path on this machine; the cluster needs a git URL")
    cron = validate_cron(args.cron) if args.pipeline_command == "schedule" else None
    params = _params(args)
    with tempfile.TemporaryDirectory(prefix="interactavatar-pipeline-") as folder, \
            contextlib.redirect_stdout(sys.stderr):  # kfp.Client prints links; stdout carries the result only
        package = str(compile_pipeline(Path(folder) / "interactavatar_pipeline.yaml"))
        client = kfp.Client(host=args.host)
        if args.pipeline_command == "submit":
            run = client.create_run_from_pipeline_package(package, arguments=params, experiment_name=args.experiment)
            result = {"run_id": run.run_id}
        else:
            experiment = client.create_experiment(args.experiment)
            recurring = client.create_recurring_run(experiment.experiment_id, args.name, cron_expression=cron,
                                                    params=params, pipeline_package_path=package, no_catchup=True)
            result = {"recurring_run_id": recurring.recurring_run_id}
    print(json.dumps(result))
    return 0
