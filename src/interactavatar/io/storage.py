"""S3 (MinIO) access for artifacts: datasets, checkpoints, model directories.

Where the server is and who we are come from the environment, never from files in the repository:
  AWS_ENDPOINT_URL (http[s]://host:port) or MINIO_ENDPOINT (host:port, https when MINIO_SECURE or
  S3_USE_HTTPS is 1/true), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY /
  MINIO_SECRET_KEY), AWS_DEFAULT_REGION or AWS_REGION (optional).
These are the variables DVC, boto and KServe's storage initializer read too, so one set of exports
serves them all. Local files are written atomically (temporary file, then rename).

A server that does not answer fails a call within seconds, as an `UnavailableURI` naming the
object and the server: minio's own client waits up to 5 minutes for each connection and tries 6
times, so a wrong AWS_ENDPOINT_URL on a network that drops packets looked like a hang.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from interactavatar.io.errors import UnavailableURI
from interactavatar.io.files import atomic_path

# A connection is refused at once or set up in milliseconds on a working network; 10 s covers a
# slow one. Reads keep minio's 5 minutes: a large object streams for a while.
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 300
# Connections retried before a server counts as not answering (minio's retries otherwise, for
# 5xx answers and dropped reads, stay as minio sets them).
CONNECT_RETRIES = 2


@dataclass(frozen=True)
class S3Settings:
    endpoint: str            # host:port
    access_key: str | None
    secret_key: str | None
    secure: bool = False
    region: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if env is None else env
        url = env.get("AWS_ENDPOINT_URL") or env.get("MINIO_ENDPOINT")
        if not url:
            raise ValueError("storage: no S3 endpoint; set AWS_ENDPOINT_URL (or MINIO_ENDPOINT)")
        if "://" in url:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"storage: AWS_ENDPOINT_URL={url!r} is not http(s)://host:port")
            host, secure = parsed.netloc, parsed.scheme == "https"
        else:
            flag = env.get("MINIO_SECURE") or env.get("S3_USE_HTTPS") or "0"
            host, secure = url, flag.lower() in ("1", "true", "yes")
        return cls(
            endpoint=host,
            access_key=env.get("AWS_ACCESS_KEY_ID") or env.get("MINIO_ACCESS_KEY"),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or env.get("MINIO_SECRET_KEY"),
            secure=secure,
            region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"),
        )


def client(settings: S3Settings | None = None) -> Minio:
    settings = settings or S3Settings.from_env()
    # minio's own pool, but with the short connection timeout and retries above.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S), maxsize=10,
        cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=5, connect=CONNECT_RETRIES, backoff_factor=0.2,
                              status_forcelist=[500, 502, 503, 504]))
    return Minio(settings.endpoint, access_key=settings.access_key, secret_key=settings.secret_key,
                 secure=settings.secure, region=settings.region, http_client=http)


@contextlib.contextmanager
def reporting_unreachable(uri: str) -> Iterator[None]:
    """Run S3 calls about `uri`; a server that does not answer raises UnavailableURI naming `uri`
    and the server's address."""
    try:
        yield
    except urllib3.exceptions.MaxRetryError as err:
        cause = err.reason.__cause__ if err.reason is not None else None
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(err.reason)
        raise UnavailableURI(uri, f"the S3 server at {err.pool.host}:{err.pool.port} does not answer ({why}); "
                                  "check AWS_ENDPOINT_URL") from err


def parse_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix")."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"storage: {uri!r} is not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_uri(bucket: str, key: str = "") -> str:
    return f"s3://{bucket}/{key.lstrip('/')}"


def ensure_bucket(s3: Minio, bucket: str) -> bool:
    """Create the bucket unless it exists; True when it was created."""
    with reporting_unreachable(s3_uri(bucket)):
        if s3.bucket_exists(bucket):
            return False
        s3.make_bucket(bucket)
    return True


def upload_bytes(s3: Minio, data: bytes, uri: str) -> None:
    """One PUT: readers see the previous object or this one, never part of it."""
    bucket, key = parse_uri(uri)
    with reporting_unreachable(uri):
        s3.put_object(bucket, key, io.BytesIO(data), len(data))


def read_bytes(s3: Minio, uri: str) -> bytes:
    response = _get_object(s3, uri)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def _get_object(s3: Minio, uri: str):
    bucket, key = parse_uri(uri)
    try:
        with reporting_unreachable(uri):
            return s3.get_object(bucket, key)
    except S3Error as err:
        if err.code == "NoSuchKey":
            raise FileNotFoundError(f"storage: no object {uri}") from err
        raise


def download_file(s3: Minio, uri: str, path: str | Path) -> Path:
    response = _get_object(s3, uri)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    finally:
        response.close()
        response.release_conn()
    return Path(path)


def upload_folder(s3: Minio, folder: str | Path, uri: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Upload every file under `folder` to uri/<relative path>, except those under the top-level
    entries named in `exclude`; returns the object keys."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"storage: {folder} is not a folder")
    bucket, prefix = parse_uri(uri)
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.relative_to(folder).parts[0] in exclude:
            continue
        key = str(PurePosixPath(prefix) / path.relative_to(folder).as_posix()) if prefix else path.relative_to(
            folder).as_posix()
        with reporting_unreachable(s3_uri(bucket, key)):
            s3.fput_object(bucket, key, str(path))
        keys.append(key)
    return keys


def download_folder(s3: Minio, uri: str, folder: str | Path) -> list[Path]:
    """Download every object under uri/ into `folder`, keeping relative paths. Each file lands
    atomically; a key that would escape `folder` ("..") is refused before anything is written."""
    bucket, prefix = parse_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    folder = Path(folder).resolve()
    targets = []
    with reporting_unreachable(uri):
        listing = list(s3.list_objects(bucket, prefix=prefix, recursive=True))
    for item in listing:
        relative = item.object_name[len(prefix):]
        target = (folder / relative).resolve()
        if not relative or not target.is_relative_to(folder):
            raise ValueError(f"storage: object {item.object_name!r} would land outside {folder}")
        targets.append((item.object_name, target))
    if not targets:
        raise FileNotFoundError(f"storage: nothing under {uri}")
    for key, target in targets:
        download_file(s3, s3_uri(bucket, key), target)
    return [target for _, target in targets]


def remove_prefix(s3: Minio, uri: str) -> None:
    """Delete every object under uri/."""
    bucket, prefix = parse_uri(uri.rstrip("/") + "/")
    with reporting_unreachable(uri):
        doomed = [DeleteObject(item.object_name) for item in s3.list_objects(bucket, prefix=prefix, recursive=True)]
        for error in s3.remove_objects(bucket, doomed):
            raise RuntimeError(f"storage: could not delete s3://{bucket}/{error.name}: {error.message}")


def object_sizes(s3: Minio, uri: str) -> dict[str, int]:
    """{path relative to uri/: size in bytes} of every object under uri/."""
    bucket, prefix = parse_uri(uri.rstrip("/") + "/")
    with reporting_unreachable(uri):
        return {item.object_name[len(prefix):]: item.size
                for item in s3.list_objects(bucket, prefix=prefix, recursive=True)}
