"""The Dockerfiles as text: pinned default bases, one resolving pip command, a non-root user, and
image names and versions that agree with the manifests and constraints. The project image is also
built and run for real (tests/container); these checks hold for the cluster's default build too."""

import re
import tomllib

import pytest
from helpers.k8s_manifests import REPO, find

DOCKERFILES = {
    "Dockerfile": "interactavatar/interactavatar",
    "docker/mlflow-server.Dockerfile": "interactavatar/mlflow-server",
}


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [
        line for line in (REPO / dockerfile).read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            pairs.append((word.upper(), " ".join(rest.split())))
    return pairs


def constraint(package: str) -> str:
    text = (REPO / "constraints.txt").read_text()
    return re.search(rf"^{re.escape(package)}==(\S+)$", text, re.M | re.I)[1]


def base_images(dockerfile: str) -> list[str]:
    """Each FROM's image, an ARG's default substituted for ${NAME}."""
    steps = instructions(dockerfile)
    defaults = dict(args.split("=", 1) for word, args in steps if word == "ARG" and "=" in args)
    return [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], args.split()[0]) for word, args in steps if word == "FROM"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_base_image_is_python_311_pinned_to_a_patch_release(dockerfile):
    (base,) = base_images(dockerfile)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base


def test_project_base_image_is_an_argument():
    """`make image` builds on a local debootstrapped Debian; clusters keep the public default."""
    assert instructions("Dockerfile")[0] == ("ARG", "BASE_IMAGE=python:3.11.7-slim-bookworm")
    assert ("FROM", "${BASE_IMAGE}") in instructions("Dockerfile")
    assert "BASE_IMAGE" in (REPO / "docker" / "build-image.sh").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_one_pip_command_with_the_project_constraints(dockerfile):
    pip_runs = [args for word, args in instructions(dockerfile) if word == "RUN" and "pip install" in args]
    resolving = [args for args in pip_runs if "--no-deps" not in args]
    assert len(resolving) == 1, "every dependency resolves in ONE pip command"
    assert resolving[0].count("pip install") == 1
    assert re.search(r"-c \S*constraints\.txt", resolving[0])


def test_project_image_installs_the_package_with_a_torch_variant_argument():
    steps = instructions("Dockerfile")
    pip_runs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    assert any(re.search(r"pip install --no-deps \.( |&|$)", run) for run in pip_runs), (
        "installs the package itself, not editable, on the resolved dependencies")
    (resolving,) = [run for run in pip_runs if "--no-deps" not in run]
    assert "-r requirements.txt" in resolving and "pyproject.toml" in resolving
    assert ("ARG", 'TORCH_INDEX_URL=""') in steps
    assert "$TORCH_INDEX_URL" in resolving
    copied = [args.split()[:-1] for word, args in steps if word == "COPY"]
    for source in (s for sources in copied for s in sources):
        assert (REPO / source).exists(), f"COPY {source}: missing from the repository"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_runs_as_a_non_root_user_after_installing(dockerfile):
    steps = instructions(dockerfile)
    users = [i for i, (word, _) in enumerate(steps) if word == "USER"]
    assert users, "no USER: the image would run as root"
    last_user = steps[users[-1]][1]
    assert last_user not in {"0", "root"} and re.fullmatch(r"\d+", last_user), (
        "a numeric uid lets runAsNonRoot verify it"
    )
    pip_step = next(i for i, (word, args) in enumerate(steps) if "pip install" in args)
    assert users[-1] > pip_step


def test_project_entrypoint_is_the_cli():
    steps = instructions("Dockerfile")
    assert ("ENTRYPOINT", '["interactavatar"]') in steps
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "interactavatar" in scripts


def test_manifests_use_the_images_these_dockerfiles_build(build):
    """The tags the manifests pull are the ones the build commands in the Dockerfiles write."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    expected = {
        "interactavatar/interactavatar": version,
        "interactavatar/mlflow-server": constraint("mlflow"),
    }
    for dockerfile, image in DOCKERFILES.items():
        assert f"-t {image}:{expected[image]}" in (REPO / dockerfile).read_text()
    objects = build("overlays/gpu")
    images = {
        c["image"]
        for o in objects
        for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    }
    images |= {c["image"] for o in find(objects, "ServingRuntime") for c in o["spec"]["containers"]}
    ours = {i for i in images if i.startswith("interactavatar/")}
    assert ours == {f"{image}:{tag}" for image, tag in expected.items()}
