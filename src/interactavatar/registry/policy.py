"""The gate policy belongs to the registered model, not to whoever registers a version.

When each caller passed its own gate, any pipeline run could lower the bar for itself (a margin of
-1 promoted a worse model). So the policy (the gate spec: primary metric, margin, guards and
tolerances; and the intervals' level) is stored on the registered model as tags, every
registration reads it from there, and it changes only through `interactavatar registry policy set`,
an admin command that needs a reason and is recorded: each change is an MLflow run in the
`ADMIN_EXPERIMENT` holding the old and new policy, who set it and why. A model without a policy
yet is gated by the default (config.DEFAULT_GATE at evaluate.compare.DEFAULT_LEVEL), which its
first registration writes down.
"""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime

from interactavatar.io.mlflow_store import experiment_id, set_with_retries
from interactavatar.registry.gate import Gate

ADMIN_EXPERIMENT = "interactavatar-registry-admin"
POLICY_TAG = "gate_policy."  # + spec, level, allow_worse, set_by, set_at, reason


def _registered_tags(client, name: str) -> dict[str, str] | None:
    """The registered model's tags; None when no such model exists yet."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(name).tags)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def read_policy(client, name: str) -> Gate:
    """The gate every registration of `name` uses: its recorded policy, else the default."""
    tags = _registered_tags(client, name) or {}
    if f"{POLICY_TAG}spec" not in tags:
        return Gate.parse()
    try:
        return Gate.parse(tags[f"{POLICY_TAG}spec"], float(tags[f"{POLICY_TAG}level"]),
                          allow_worse=tags.get(f"{POLICY_TAG}allow_worse") == "true")
    except (KeyError, ValueError) as err:
        raise ValueError(f"registry: {name}'s gate policy tags are unreadable ({err}); set it again with "
                         f"`interactavatar registry policy set`") from err


def policy_tags(client, name: str) -> dict[str, str]:
    """The policy tags recorded on `name`; the default's, set_by "unrecorded", when there are none."""
    tags = {k: v for k, v in (_registered_tags(client, name) or {}).items() if k.startswith(POLICY_TAG)}
    return tags or {**policy_record(Gate.parse(), "the default: no policy was set", "unrecorded"),
                    f"{POLICY_TAG}set_at": ""}


def policy_record(gate: Gate, reason: str, set_by: str) -> dict[str, str]:
    """The tags that store `gate` as a registered model's policy."""
    return {f"{POLICY_TAG}spec": gate.spec(), f"{POLICY_TAG}level": f"{gate.level:g}",
            f"{POLICY_TAG}allow_worse": str(gate.allow_worse).lower(), f"{POLICY_TAG}set_by": set_by,
            f"{POLICY_TAG}set_at": datetime.now(UTC).isoformat(timespec="seconds"),
            f"{POLICY_TAG}reason": reason}


def write_default_policy(client, name: str) -> None:
    """Record the default as `name`'s policy when it has none (its first registration)."""
    if f"{POLICY_TAG}spec" not in (_registered_tags(client, name) or {}):
        for key, value in _spec_last(policy_record(Gate.parse(), "the default: no policy was set", "default")):
            set_with_retries(client.set_registered_model_tag, name, key, value)  # concurrent first versions


def set_policy(client, name: str, gate: Gate, reason: str) -> dict[str, str]:
    """Store `gate` as `name`'s policy and record the change (an admin run); returns the new tags."""
    if not reason.strip():
        raise ValueError("registry policy set: --reason is required: a policy change is recorded with why")
    if _registered_tags(client, name) is None:
        client.create_registered_model(name)
    previous = read_policy(client, name)
    set_by = f"{getpass.getuser()}@{socket.gethostname()}"
    record = policy_record(gate, reason.strip(), set_by)
    run = client.create_run(experiment_id(client, ADMIN_EXPERIMENT), run_name=f"gate-policy {name}",
                            tags={"registered_model": name, "set_by": set_by, "reason": reason.strip()})
    for key, value in {"previous_spec": previous.spec(), "previous_level": f"{previous.level:g}",
                       "spec": gate.spec(), "level": f"{gate.level:g}",
                       "allow_worse": str(gate.allow_worse).lower()}.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    for key, value in _spec_last(record):
        client.set_registered_model_tag(name, key, value)
    return record


def _spec_last(record: dict[str, str]) -> list[tuple[str, str]]:
    """The tags in the order to write them: the spec last. An MLflow server writes one tag per call
    and `read_policy` takes the spec's presence to mean a policy is there, so a concurrent
    registration must not see the spec before the level (it did: "tags are unreadable")."""
    return sorted(record.items(), key=lambda item: item[0] == f"{POLICY_TAG}spec")
