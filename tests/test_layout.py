"""The package's layout rules, checked from the source (docs/design.md, "Layout"): which folder may
import which, no import cycles between folders, and nothing that edits `sys.path`.

Every import counts, also one inside a function: a lazy import is a dependency all the same.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "interactavatar"

# What each part may never import (folders, or modules written with dots).
FORBIDDEN = {
    # The network knows tensors, not files, datasets or endpoints (io.files only, to save itself).
    "model": {"serve", "inference", "pipeline", "data", "io.media", "io.storage", "train", "evaluate",
              "registry", "cluster"},
    "data": {"model", "train", "inference", "serve", "evaluate", "registry", "cluster", "pipeline"},
    "io": {"model", "data", "train", "inference", "serve", "evaluate", "registry", "cluster", "pipeline"},
    "config": {"model", "data", "io", "train", "inference", "serve", "evaluate", "registry", "cluster", "pipeline"},
}


def _part(module: str) -> str:
    """interactavatar.model.dit -> model; interactavatar.config -> config."""
    return module.split(".")[1]


def _imports(path: Path) -> list[str]:
    """The interactavatar modules a file imports, wherever the import statement stands."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return [m for m in modules if m.startswith("interactavatar.")]


def _sources() -> dict[str, Path]:
    return {".".join(("interactavatar", *p.relative_to(PACKAGE).with_suffix("").parts)): p
            for p in PACKAGE.rglob("*.py")}


def _folder_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in _sources().items():
        if module.count(".") < 2:  # cli.py and config.py stand above and below everything
            continue
        for imported in _imports(path):
            if imported.count(".") >= 2 or _part(imported) == "config":
                graph[_part(module)].add(_part(imported))
    return graph


def test_the_rules_see_the_package():
    """Guards the guard: the walk finds the parts and their imports (an empty walk passes nothing)."""
    graph = _folder_graph()
    assert {"model", "data", "io", "train", "inference", "serve", "pipeline"} <= set(graph)
    assert "model" in graph["train"] and "io" in graph["data"]


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_a_part_imports_nothing_above_it(part):
    offences = []
    for module, path in _sources().items():
        if module != f"interactavatar.{part}" and not module.startswith(f"interactavatar.{part}."):
            continue
        for imported in _imports(path):
            name = imported.removeprefix("interactavatar.")
            if any(name == bad or name.startswith(f"{bad}.") for bad in FORBIDDEN[part]):
                offences.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert not offences, "\n".join(offences)


def test_no_import_cycles_between_folders():
    graph = _folder_graph()
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == node:
                continue
            if nxt in trail:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif len(trail) < len(graph) + 1:
                visit(nxt, trail + [nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, "import cycles between folders:\n" + "\n".join(sorted(set(cycles)))


def test_nothing_edits_sys_path():
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if "sys.path" in path.read_text()]
    assert not offenders, f"sys.path edited in {offenders}"


@pytest.mark.slow
def test_the_installed_wheel_compiles_the_pipeline_outside_a_checkout(tmp_path):
    """The pipeline, its components and the CLI live in the package: a wheel installed elsewhere
    compiles them with no checkout in sight (they used to be read from the repository's root)."""
    import shutil
    import subprocess
    import sys

    from interactavatar.pipeline import components

    # Built from a copy of what the image's Dockerfile copies: setuptools leaves build/ beside the source.
    repo, source = PACKAGE.parents[1], tmp_path / "source"
    shutil.copytree(repo / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("interactavatar-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = ("import interactavatar, sys; assert interactavatar.__file__.startswith(sys.argv[1]), interactavatar.__file__;"
              "from interactavatar.cli import main; sys.exit(main(['pipeline', 'compile']))")
    result = subprocess.run([sys.executable, "-c", script, str(site)], cwd=elsewhere, capture_output=True, text=True,
                            env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "pipelines" / "interactavatar_pipeline.yaml").is_file()
    assert len(list((elsewhere / "components").glob("*.yaml"))) == len(components.__all__)
