"""MinIO's setup, run by the Job in k8s/minio/setup-job.yaml: the buckets, one policy per purpose, and
one user per purpose that holds exactly its policy.

Only this Job and MinIO itself see the root key pair; every client (MLflow, the pipeline, the
predictor) presents a scoped pair (docs/cluster.md, "Credentials"), which this module registers:

    python -m interactavatar.cluster.minio_setup --endpoint minio:9000 --bucket dvc --bucket mlflow \\
        --bucket models --policies /etc/minio-policies --users /var/run/secrets/minio-users

The root pair comes from MINIO_ROOT_USER and MINIO_ROOT_PASSWORD (environment, never the command
line). `--policies` holds one `<policy>.json` per policy; `--users` one folder per user, named after
its policy, with the files AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a mounted Secret). Every step
is idempotent: a rerun rewrites the policies and the users' secret keys (a rotation) and takes away
any policy a user should not hold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT_ENV = ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
KEY_FILES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# MinIO refuses shorter keys; checked here so that the Job says which user's are too short.
MIN_ACCESS_KEY, MIN_SECRET_KEY = 3, 8


def read_policies(folder: str | Path) -> dict[str, dict]:
    """Policy name -> policy document, one `<name>.json` per policy."""
    policies = {path.stem: json.loads(path.read_text()) for path in sorted(Path(folder).glob("*.json"))}
    if not policies:
        raise ValueError(f"{folder}: no policy (*.json)")
    return policies


def read_users(folder: str | Path) -> dict[str, tuple[str, str]]:
    """Policy name -> (access key, secret key) of the user that holds it, one folder per user.
    Hidden entries are skipped: a mounted Secret keeps its data behind `..data` links."""
    users = {}
    for path in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(".")):
        missing = [key for key in KEY_FILES if not (path / key).is_file()]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)}")
        users[path.name] = tuple((path / key).read_text().strip() for key in KEY_FILES)
    if not users:
        raise ValueError(f"{folder}: no user (one folder per policy)")
    return users


def check_users(users: dict[str, tuple[str, str]], policies: dict[str, dict], root_access_key: str) -> None:
    """Refuse what would leave a client with more than its policy: a user without a policy file, a
    pair that is the root's, or one access key shared by two users (they would share a policy)."""
    problems = []
    owners: dict[str, str] = {}
    for policy, (access_key, secret_key) in users.items():
        if policy not in policies:
            problems.append(f"user {policy}: no policy {policy}.json")
        if access_key == root_access_key:
            problems.append(f"user {policy}: its access key is the root user's")
        if len(access_key) < MIN_ACCESS_KEY or len(secret_key) < MIN_SECRET_KEY:
            problems.append(f"user {policy}: MinIO wants at least {MIN_ACCESS_KEY} characters for the access "
                            f"key and {MIN_SECRET_KEY} for the secret key")
        if access_key in owners:
            problems.append(f"users {owners[access_key]} and {policy} share one access key")
        owners[access_key] = policy
    if problems:
        raise ValueError("; ".join(problems))


def apply(s3, admin, buckets: list[str], policies: dict[str, dict], users: dict[str, tuple[str, str]]) -> None:
    """Create the missing buckets, write every policy, and give each user its secret key and exactly
    its policy. `s3` is a minio.Minio, `admin` a minio.MinioAdmin, both signed with the root pair."""
    for bucket in buckets:
        if not s3.bucket_exists(bucket):
            s3.make_bucket(bucket)
    for name, document in policies.items():
        admin.policy_add(name, policy=document)
    for policy, (access_key, secret_key) in users.items():
        admin.user_add(access_key, secret_key)
        held = {name for name in json.loads(admin.user_info(access_key)).get("policyName", "").split(",") if name}
        if policy not in held:
            admin.attach_policy([policy], user=access_key)
        if held - {policy}:
            admin.detach_policy(sorted(held - {policy}), user=access_key)
        print(f"minio setup: user for {policy} holds {policy} only", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from minio import Minio, MinioAdmin
    from minio.credentials import StaticProvider

    parser = argparse.ArgumentParser(prog="python -m interactavatar.cluster.minio_setup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True, help="MinIO's S3 endpoint, host:port (plain HTTP)")
    parser.add_argument("--bucket", action="append", default=[], help="a bucket to create (repeatable)")
    parser.add_argument("--policies", required=True, help="folder of <policy>.json files")
    parser.add_argument("--users", required=True, help="folder of one folder per user, named after its policy")
    args = parser.parse_args(argv)
    missing = [name for name in ROOT_ENV if not os.environ.get(name)]
    if missing:
        parser.error(f"{', '.join(missing)}: not set (the root pair comes from the environment only)")
    root_user, root_password = (os.environ[name] for name in ROOT_ENV)
    policies, users = read_policies(args.policies), read_users(args.users)
    check_users(users, policies, root_user)
    s3 = Minio(args.endpoint, access_key=root_user, secret_key=root_password, secure=False)
    admin = MinioAdmin(endpoint=args.endpoint, credentials=StaticProvider(root_user, root_password), secure=False)
    apply(s3, admin, args.bucket, policies, users)
    return 0


if __name__ == "__main__":
    sys.exit(main())
