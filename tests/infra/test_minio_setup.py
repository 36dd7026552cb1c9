"""interactavatar.cluster.minio_setup, the code of MinIO's setup Job (k8s/minio/setup-job.yaml).

No MinIO server runs here (SeaweedFS, the tests' S3 server, has no MinIO admin API), so the S3 and
admin clients are stand-ins that keep MinIO's state: buckets, policies, users and what each holds.
Checked: one run makes everything, a rerun changes only keys and takes stale policies away, pairs
that would widen a client's rights (or that MinIO refuses) are refused before anything changes, and
a Secret mounted as Kubernetes mounts it reads.
"""

import json

import pytest
from helpers.k8s_manifests import K8S

from interactavatar.cluster import minio_setup

POLICIES = {"interactavatar-serving": {"Statement": []}, "interactavatar-pipeline": {"Statement": []}}
USERS = {"interactavatar-serving": ("serving-key", "serving-secret"),
         "interactavatar-pipeline": ("pipeline-key", "pipeline-secret")}


class FakeS3:
    def __init__(self, buckets=()):
        self.buckets, self.made = set(buckets), []

    def bucket_exists(self, bucket):
        return bucket in self.buckets

    def make_bucket(self, bucket):
        self.buckets.add(bucket)
        self.made.append(bucket)


class FakeAdmin:
    """MinIO's IAM: policies by name, users by access key with their secret and attached policies."""

    def __init__(self):
        self.policies, self.users, self.changes = {}, {}, []

    def policy_add(self, name, policy=None):
        self.policies[name] = policy

    def user_add(self, access_key, secret_key):
        self.users.setdefault(access_key, {"policies": set()})["secret"] = secret_key

    def user_info(self, access_key):
        return json.dumps({"policyName": ",".join(sorted(self.users[access_key]["policies"])), "status": "enabled"})

    def attach_policy(self, policies, user=None):
        assert set(policies) <= set(self.policies), "MinIO refuses to attach a policy it does not have"
        self.users[user]["policies"] |= set(policies)
        self.changes.append(("attach", user, tuple(policies)))

    def detach_policy(self, policies, user=None):
        self.users[user]["policies"] -= set(policies)
        self.changes.append(("detach", user, tuple(policies)))


def test_setup_makes_buckets_policies_and_users_each_with_its_policy():
    s3, admin = FakeS3(buckets={"dvc"}), FakeAdmin()
    minio_setup.apply(s3, admin, ["dvc", "mlflow", "models"], POLICIES, USERS)
    assert s3.buckets == {"dvc", "mlflow", "models"} and s3.made == ["mlflow", "models"]
    assert admin.policies == POLICIES
    assert {key: (u["secret"], u["policies"]) for key, u in admin.users.items()} == {
        "serving-key": ("serving-secret", {"interactavatar-serving"}),
        "pipeline-key": ("pipeline-secret", {"interactavatar-pipeline"}),
    }


def test_rerun_rotates_keys_and_takes_stale_policies_away():
    s3, admin = FakeS3(), FakeAdmin()
    minio_setup.apply(s3, admin, ["models"], POLICIES, USERS)
    admin.policies["readwrite"] = {"Statement": []}
    admin.attach_policy(["readwrite"], user="serving-key")
    admin.changes.clear()
    rotated = {**USERS, "interactavatar-serving": ("serving-key", "new-serving-secret")}
    minio_setup.apply(s3, admin, ["models"], POLICIES, rotated)
    assert s3.made == ["models"], "an existing bucket is left alone"
    assert admin.users["serving-key"] == {"secret": "new-serving-secret", "policies": {"interactavatar-serving"}}
    assert admin.changes == [("detach", "serving-key", ("readwrite",))]


@pytest.mark.parametrize("users, problem", [
    ({"interactavatar-serving": ("root-user", "serving-secret")}, "the root user's"),
    ({"interactavatar-serving": ("same-key", "secret-one"), "interactavatar-pipeline": ("same-key", "secret-two")},
     "share one access key"),
    ({"interactavatar-admin": ("admin-key", "admin-secret")}, "no policy interactavatar-admin.json"),
    ({"interactavatar-serving": ("serving-key", "short")}, "8 for the secret key"),
])
def test_pairs_that_widen_a_client_or_minio_refuses_are_refused(users, problem):
    with pytest.raises(ValueError, match=problem):
        minio_setup.check_users(users, POLICIES, "root-user")


def _mount_secret(folder, data):
    """A Secret volume as the kubelet writes it: the files in a timestamped folder behind `..data`."""
    stamp = folder / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    (folder / "..data").symlink_to(stamp.name)
    for key, value in data.items():
        (stamp / key).write_text(value)
        (folder / key).symlink_to(f"..data/{key}")


def test_users_read_from_mounted_secrets(tmp_path):
    _mount_secret(tmp_path / "interactavatar-serving",
                  {"AWS_ACCESS_KEY_ID": "serving-key", "AWS_SECRET_ACCESS_KEY": "serving-secret\n"})
    assert minio_setup.read_users(tmp_path) == {"interactavatar-serving": ("serving-key", "serving-secret")}
    (tmp_path / "interactavatar-pipeline").mkdir()
    with pytest.raises(ValueError, match="missing AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"):
        minio_setup.read_users(tmp_path)


def test_committed_policies_read_and_name_their_users():
    policies = minio_setup.read_policies(K8S / "minio" / "policies")
    assert set(policies) == {"interactavatar-mlflow", "interactavatar-pipeline", "interactavatar-serving"}


def test_root_pair_comes_from_the_environment_only(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIO_ROOT_USER", raising=False)
    monkeypatch.delenv("MINIO_ROOT_PASSWORD", raising=False)
    with pytest.raises(SystemExit):
        minio_setup.main(["--endpoint", "minio:9000", "--policies", str(tmp_path), "--users", str(tmp_path)])
