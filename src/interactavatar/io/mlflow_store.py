"""Shared ways of touching an MLflow store: one writer at a time on SQLite, experiments made once.

MLflow migrates a new SQLite store's schema when a client first opens it, and two processes doing so
at once race on the `alembic_version` row (six registrations started together on a fresh store: five
failed with "Online migration expected to match one row" or "database is locked"). SQLite takes one
writer at a time anyway, so a registration on such a store holds an exclusive lock on a file beside
the database for its whole read-decide-write: concurrent registrations then run one after another
and all succeed. A server store (http://...) serialises its own writers and takes no lock here.

Callers hold an `MlflowClient` bound to their store, never the fluent API's process-wide URIs:
`mlflow.set_registry_uri` also sets MLFLOW_REGISTRY_URI in os.environ, so a later child process
with its own MLFLOW_TRACKING_URI still read another store's registry (a benchmark's SQLite base
version was looked up on a test's MLflow server and not found).
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URI; None for any other store."""
    return Path(uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0]) if uri.startswith(SQLITE_PREFIX) else None


@contextlib.contextmanager
def exclusive_store(uri: str) -> Iterator[None]:
    """Hold the store's lock (SQLite stores only) until the block ends; waits for another holder."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, and by the kernel if we die
        yield


def experiment_id(client, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment `name`, created if missing (by whichever of two racing callers wins)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
        return client.get_experiment_by_name(name).experiment_id


def set_with_retries(setter, *args) -> None:
    """Call an MLflow upsert (`client.set_registered_model_alias`, `set_registered_model_tag`...).
    Retried: an MLflow server inserts a new alias or tag without a lock, so two first-time setters
    can collide on its unique key; the loser's retry is an update."""
    from mlflow.exceptions import MlflowException

    for attempt in range(5):
        try:
            setter(*args)
            return
        except MlflowException:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
