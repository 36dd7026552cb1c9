"""A model reference -> a local model directory, and where that model came from.

- A path (e.g. /mnt/models, where KServe's storage initializer puts the storageUri) is used as is.
- `models:/NAME@alias` or `models:/NAME/VERSION` is downloaded from the MLflow registry named by
  MLFLOW_TRACKING_URI (or MLFLOW_REGISTRY_URI); an alias is resolved to its version first, so the
  caller knows exactly which version it got even if the alias moves during the download.
- `s3://...` (and the other schemes kserve_storage knows) is downloaded with kserve_storage; for
  MinIO set AWS_ENDPOINT_URL, S3_USE_HTTPS=0 and the AWS key variables.

Wherever the files came from, the model directory is the shallowest folder holding config.yaml
beside its weights, so a registered artifact may nest it (e.g. artifacts/model/). A LoRA version's
directory holds an adapter instead of full weights, and names its base as a pinned registry
version (model/lora.py); `resolve_pinned` fetches such a base once per machine, into a cache.

Every model directory we write says where it came from in `lineage.json` (`Lineage`): trained from
scratch, imported from the public release, or fine-tuned from another model (its reference and,
for a registry model, its version). The registry copies it into each version's tags, and
`interactavatar registry lineage` follows the parents back to scratch or the release.

A reference that names nothing (no such registered model, version or alias; a registry or S3
server that does not answer) raises `UnavailableURI` naming it, which the command line prints as
one line, within seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from interactavatar.io.errors import UnavailableURI
from interactavatar.io.files import atomic_directory, write_text_atomic

LINEAGE_FILE = "lineage.json"
# Where a model's weights came from (Lineage.origin).
ORIGINS = ("scratch", "release", "model")
# A LoRA version's weights: the adapter and the fully trained aligner and norms (model/lora.py).
ADAPTER_WEIGHTS = "adapter.safetensors"
# What a model directory holds its weights in, beside config.yaml: all of them, or an adapter.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", ADAPTER_WEIGHTS)
# Where registry versions fetched as a LoRA version's base are kept (default ~/.cache/interactavatar/models).
MODEL_CACHE_ENV = "INTERACTAVATAR_MODEL_CACHE"
# How long a registry server has to answer at all before a reference to it is refused.
REGISTRY_PROBE_TIMEOUT_S = 10
PINNED = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>\d+)")


@dataclass(frozen=True)
class Lineage:
    """origin: "scratch" (trained from random weights), "release" (imported from the public release)
    or "model" (fine-tuned from `parent`). parent: the reference it was fine-tuned from, as given;
    parent_version: that model's registry version when it came from the registry ("" otherwise)."""

    origin: str = "scratch"
    parent: str = ""
    parent_version: str = ""

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"lineage: origin {self.origin!r}, expected one of {ORIGINS}")
        if (self.origin == "model") != bool(self.parent):
            raise ValueError(f"lineage: origin {self.origin!r} with parent {self.parent!r} (a parent iff origin 'model')")

    def describe(self) -> str:
        if self.origin != "model":
            return self.origin
        return f"version {self.parent_version} ({self.parent})" if self.parent_version else self.parent


def read_lineage(model_dir: str | Path) -> Lineage:
    """The directory's lineage.json; a directory without one (written before lineage was recorded)
    counts as trained from scratch."""
    path = Path(model_dir) / LINEAGE_FILE
    if not path.is_file():
        return Lineage()
    try:
        return Lineage(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a lineage record ({err})") from err


def write_lineage(model_dir: str | Path, lineage: Lineage) -> None:
    write_text_atomic(Path(model_dir) / LINEAGE_FILE, json.dumps(asdict(lineage), indent=1) + "\n")


@dataclass(frozen=True)
class ResolvedModel:
    """A reference made local. path: the model directory; reference: as given; version: the
    registry version it named (an alias resolved), "" when it did not come from the registry."""

    path: Path
    reference: str
    version: str = ""

    @property
    def pinned(self) -> str:
        """The reference that names these exact weights: models:/NAME/VERSION for a registry
        reference (an alias replaced by the version it named), else the reference itself."""
        return pinned_reference(self.reference, self.version)

    def as_parent(self) -> Lineage:
        """The lineage of a model fine-tuned from this one."""
        return Lineage("model", self.reference, self.version)


def pinned_reference(reference: str, version: str) -> str:
    """models:/NAME/VERSION for a registry `reference` that named `version` (an alias replaced by
    its version), else `reference` itself."""
    return f"models:/{registry_name(reference)}/{version}" if version else reference


def find_model_dir(root: Path) -> Path:
    if (root / "config.yaml").is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such model directory")
    candidates = [p.parent for p in root.rglob("config.yaml")
                  if any((p.parent / name).is_file() for name in WEIGHT_FILES)]
    if not candidates:
        raise FileNotFoundError(f"{root}: holds no model directory (config.yaml beside model.safetensors, "
                                f"or beside {ADAPTER_WEIGHTS} for a LoRA version)")
    return min(candidates, key=lambda p: (len(p.parts), str(p)))


def resolve_model(ref: str, download_dir: str | Path | None = None) -> ResolvedModel:
    """The local model directory for `ref`, and the registry version it named; downloads go to
    `download_dir` (default: a new temp dir)."""
    if not ref.startswith("models:/") and "://" not in ref:
        return ResolvedModel(find_model_dir(Path(ref)), ref)
    target = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="interactavatar-model-"))
    target.mkdir(parents=True, exist_ok=True)
    if ref.startswith("models:/"):
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        name, version = registry_version(ref)
        try:
            downloaded = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                             dst_path=str(target))
        except MlflowException as err:
            raise UnavailableURI(ref, f"version {version}'s files cannot be fetched from the registry"
                                      f"{_registry_named()}: {err.message}") from err
        return ResolvedModel(find_model_dir(Path(downloaded)), ref, version)
    from botocore.exceptions import BotoCoreError, ClientError
    from kserve_storage import Storage

    try:
        downloaded = Storage.download(ref, str(target))
    except (BotoCoreError, ClientError, RuntimeError) as err:
        # botocore's errors for an endpoint that does not answer; kserve_storage's RuntimeError for
        # the failures it recognises (no such bucket, denied, nothing under the prefix).
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        raise UnavailableURI(ref, f"cannot be downloaded{f' from {endpoint}' if endpoint else ''}: "
                                  f"{str(err).splitlines()[0]}") from err
    return ResolvedModel(find_model_dir(Path(downloaded)), ref)


def resolve_pinned(ref: str) -> ResolvedModel:
    """A pinned registry version (models:/NAME/VERSION), downloaded once into the model cache and
    reused after: a version's files never change. The cache is keyed by the registry's URI too, as
    two registries number their versions alike; a download is published in one rename, the first
    process's copy kept when several fetch it at once."""
    import mlflow

    match = PINNED.fullmatch(ref)
    if match is None:
        raise ValueError(f"{ref}: expected a pinned registry version, models:/NAME/VERSION")
    cache = Path(os.environ.get(MODEL_CACHE_ENV)
                 or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "interactavatar" / "models")
    registry = mlflow.get_registry_uri()
    folder = cache / hashlib.sha256(registry.encode()).hexdigest()[:16] / match["name"] / match["version"]
    if not folder.is_dir():
        with atomic_directory(folder, keep_existing=True) as staging:
            resolve_model(ref, staging)
    return ResolvedModel(find_model_dir(folder), ref, match["version"])


def resolve_model_dir(ref: str, download_dir: str | Path | None = None) -> Path:
    """The local model directory for `ref` (see `resolve_model`)."""
    return resolve_model(ref, download_dir).path


def registry_version(ref: str, client=None) -> tuple[str, str]:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> (NAME, VERSION), the alias looked up now
    (in `client`'s registry; default: the environment's). UnavailableURI when the registry holds no
    such version (or cannot be read)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    reference = ref.removeprefix("models:/")
    if client is None:
        registry_answers(ref)
    registry = client or MlflowClient()
    # Only the environment's registry is named: a client passed in keeps its URI to itself.
    where = "" if client else _registry_named()
    if "@" in reference:
        name, alias = registry_name(ref), reference.split("@", 1)[1]
        try:
            return name, str(registry.get_model_version_by_alias(name, alias).version)
        except MlflowException as err:
            if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise UnavailableURI(ref, f"the registry{where} cannot be read: {err.message}") from err
            raise UnavailableURI(ref, f"the registry{where} has no version of {name!r} under alias "
                                      f"{alias!r}") from err
    name, _, version = reference.partition("/")
    if not name or not version.isdigit():
        raise ValueError(f"{ref}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    try:
        registry.get_model_version(name, version)
    except MlflowException as err:
        raise UnavailableURI(ref, f"cannot be fetched from the registry{where}: {err.message}") from err
    return name, version


def registry_answers(ref: str, registry_uri: str | None = None) -> None:
    """UnavailableURI naming `ref` within seconds when the registry (default: the environment's)
    is an MLflow server that does not answer at all (connection refused, no such host, silence).
    MLflow's own client retries for about four minutes (7 retries with backoff), meant for a
    rate-limited server, not for a wrong URI or a server that is down. Resolving a reference
    starts a command or a task, so failing here loses nothing."""
    import mlflow
    import requests

    uri = registry_uri or mlflow.get_registry_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=REGISTRY_PROBE_TIMEOUT_S)
    except requests.RequestException as err:
        raise UnavailableURI(ref, f"the registry at {uri} does not answer ({type(err).__name__} "
                                  f"within {REGISTRY_PROBE_TIMEOUT_S} s)") from err


def _registry_named() -> str:
    """" at URI" for the environment's registry, to name it in an error."""
    import mlflow

    return f" at {mlflow.get_registry_uri()}"


def registry_name(ref: str) -> str:
    """The registered model's name in `models:/NAME@ALIAS` or `models:/NAME/VERSION`."""
    return ref.removeprefix("models:/").split("@", 1)[0].split("/", 1)[0]
