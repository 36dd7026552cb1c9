"""`interactavatar register` and `interactavatar registry rollback|policy|resolve|lineage`."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from interactavatar.config import DEFAULT_GATE, MODEL_NAME
from interactavatar.evaluate.compare import DEFAULT_LEVEL


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    register = subparsers.add_parser("register", help="register an evaluated model; the gate decides the champion")
    register.add_argument("--model", required=True, type=Path, help="model directory")
    register.add_argument("--metrics", required=True, type=Path, help="metrics.json from `interactavatar evaluate`")
    register.add_argument("--name", default=MODEL_NAME)
    register.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                          help="lineage tags (data_rev, dataset_hash, training run ids)")
    register.set_defaults(func=run_register)

    registry = subparsers.add_parser("registry", help="inspect and steer the model registry")
    commands = registry.add_subparsers(dest="registry_command", required=True)
    rollback = commands.add_parser("rollback", help="retire the champion and restore the previous one")
    rollback.add_argument("--name", default=MODEL_NAME)
    rollback.set_defaults(func=run_rollback)
    policy = commands.add_parser("policy", help="show or set the gate policy every registration of a model uses")
    policy.add_argument("action", choices=("show", "set"))
    policy.add_argument("--name", default=MODEL_NAME)
    policy.add_argument("--gate", default=DEFAULT_GATE, metavar="PRIMARY:max|min:MARGIN[,GUARD:max|min:TOLERANCE...]",
                        help="set: the primary per-clip metric whose gain's interval must lie above MARGIN, then "
                             "guards whose interval may not lie below -TOLERANCE (default: %(default)s)")
    policy.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="set: the intervals' confidence level")
    policy.add_argument("--allow-worse", action="store_true",
                        help="set: accept a negative primary margin (promotes versions worse than the champion)")
    policy.add_argument("--reason", default="", help="set: why; recorded with the change (required)")
    policy.set_defaults(func=run_policy)
    resolve = commands.add_parser("resolve", help="models:/NAME@ALIAS -> the artifact URI (s3://...)")
    resolve.add_argument("uri")
    resolve.set_defaults(func=run_resolve)
    lineage = commands.add_parser("lineage", help="a version's ancestry, back to scratch or the release import")
    lineage.add_argument("version", help="a version number, or an alias such as champion")
    lineage.add_argument("--name", default=MODEL_NAME)
    lineage.add_argument("--json", action="store_true", help="the chain as JSON, newest first")
    lineage.set_defaults(func=run_lineage)


def _tags(pairs: list[str]) -> dict[str, str]:
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise ValueError(f"--tag {bad[0]!r}: expected KEY=VALUE")
    return dict(p.split("=", 1) for p in pairs)


def run_register(args: argparse.Namespace) -> int:
    from interactavatar.registry.mlflow import register

    result = register(args.model, args.metrics, args.name, _tags(args.tag))
    print(json.dumps(asdict(result)))
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from interactavatar.registry.mlflow import rollback

    print(json.dumps({"champion": rollback(args.name)}))
    return 0


def run_policy(args: argparse.Namespace) -> int:
    from interactavatar.registry.gate import Gate
    from interactavatar.registry.mlflow import change_policy, show_policy

    if args.action == "show":
        print(json.dumps(show_policy(args.name), indent=1))
    else:
        print(json.dumps(change_policy(args.name, Gate.parse(args.gate, args.level, args.allow_worse), args.reason),
                         indent=1))
    return 0


def run_resolve(args: argparse.Namespace) -> int:
    from interactavatar.registry.mlflow import resolve

    print(resolve(args.uri))
    return 0


def run_lineage(args: argparse.Namespace) -> int:
    from interactavatar.registry.mlflow import lineage

    chain = lineage(args.version, args.name)
    if args.json:
        print(json.dumps(chain, indent=1))
        return 0
    for entry in chain:
        print(f"{args.name} version {entry['version']}: trained on data {entry['data_rev'] or '(unknown)'}")
    last = chain[-1]
    if last["origin"] == "model":
        print(f"  from {last['parent']} (outside this registry)")
    else:
        print(f"  from {'the public release import' if last['origin'] == 'release' else 'scratch'}")
    return 0
