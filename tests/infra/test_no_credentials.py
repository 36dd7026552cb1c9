"""No credential is committed, written into a manifest or baked into an image (docs/design.md, "Credentials").

Secrets reach the cluster only through k8s/secrets/, generated from git-ignored env files whose
committed examples hold placeholders.
"""

import base64
import re
import subprocess

import pytest
import yaml
from helpers.k8s_manifests import K8S, OVERLAYS, REPO, find, is_secret_name

SECRETS = K8S / "secrets"
PLACEHOLDER = "CHANGE_ME"
# High-signal shapes of real credentials, searched in every tracked file.
CREDENTIAL_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "AWS secret in a config file": re.compile(r"aws_secret_access_key\s*=\s*[A-Za-z0-9/+]{40}"),
}


def tracked_files() -> list[str]:
    done = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    return [name for name in done.stdout.split("\0") if name]


def env_file(path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_no_env_file_is_tracked():
    tracked = [n for n in tracked_files() if re.search(r"(^|/)[^/]*\.env$", n) or n.endswith("s3-keys.env")]
    assert not tracked, f"env files hold real credentials and must not be committed: {tracked}"


def test_secret_env_files_are_git_ignored(tmp_path):
    for example in SECRETS.glob("*.env.example"):
        real = example.with_suffix("")
        done = subprocess.run(["git", "check-ignore", "-q", str(real)], cwd=REPO)
        assert done.returncode == 0, f"{real.relative_to(REPO)} is not git-ignored"


def test_examples_hold_placeholders_only():
    examples = list(SECRETS.glob("*.env.example"))
    assert examples
    for example in examples:
        for key, value in env_file(example).items():
            if is_secret_name(key):
                assert value.startswith(PLACEHOLDER), (
                    f"{example.name}: {key} must be a {PLACEHOLDER}... placeholder"
                )


def test_no_tracked_file_looks_like_a_credential():
    hits = []
    for name in tracked_files():
        path = REPO / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{name}: {what}" for what, pattern in CREDENTIAL_PATTERNS.items() if pattern.search(text)]
    assert not hits, hits


def test_no_committed_manifest_holds_a_secret():
    problems = []
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc.get("kind") == "Secret":
                problems.append(f"{path.name}: a Secret; generate it in k8s/secrets/ instead")
            for generator in doc.get("secretGenerator", []):
                if "literals" in generator:
                    problems.append(f"{path.name}: secretGenerator {generator['name']} has literals")
            # An env var with a secret's name must come from a Secret, not a literal value; one
            # named ..._FILE holds the path of a mounted Secret, not the secret.
            for match in re.finditer(r"name: ([A-Z_]+)\s*,?\s*value:", path.read_text()):
                if is_secret_name(match[1]) and not match[1].endswith("_FILE"):
                    problems.append(f"{path.name}: {match[1]} has a literal value")
    assert not problems, sorted(set(problems))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_secrets_come_from_the_env_files(build, overlay):
    """With the examples in place of the env files, every rendered Secret value is an example's."""
    example_values = {v for e in SECRETS.glob("*.env.example") for v in env_file(e).values()}
    secrets = find(build(overlay), "Secret")
    assert secrets
    for secret in secrets:
        assert "stringData" not in secret
        for key, encoded in secret["data"].items():
            assert base64.b64decode(encoded).decode() in example_values, f"{secret['metadata']['name']}.{key}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "docker/mlflow-server.Dockerfile"])
def test_images_bake_in_no_secret(dockerfile):
    text = (REPO / dockerfile).read_text()
    names = re.findall(r"^\s*(?:ARG|ENV)\s+([A-Za-z_][A-Za-z0-9_]*)", text, re.M)
    names += re.findall(r"\\\s*\n\s*([A-Za-z_][A-Za-z0-9_]*)=", text)
    assert not [n for n in names if is_secret_name(n)]
    assert not re.search(r"^\s*(COPY|ADD)\s.*\.env\b", text, re.M)


def test_build_context_excludes_all_but_the_package():
    """.dockerignore denies everything, then lets in only what `pip install .` needs."""
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", "src"}
