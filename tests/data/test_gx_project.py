"""Validation in a file-backed Great Expectations project (`--gx-project`): the repository's gx/
holds the code's suite; a run loads it from disk, stores its validation result and GX's Data Docs,
and leaves the committed files as they were; a failing dataset leaves a failed stored result; a
stored suite that differs from the code's is rewritten, and said so.

Each test works on a copy of the repository's gx/ (its committed files), never on gx/ itself."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from helpers.repo_state import REPO

from interactavatar.cli import main
from interactavatar.data.gx_project import SUITE, open_context, same_expectations
from interactavatar.data.validation import checks, expectations, validate, write_reports

SUITE_FILE = Path("gx") / "expectations" / f"{SUITE}.json"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A folder holding a copy of the repository's committed GX project (gx/ without uncommitted/)."""
    folder = tmp_path / "project"
    shutil.copytree(REPO / "gx", folder / "gx", ignore=shutil.ignore_patterns("uncommitted"))
    return folder


def _committed(project: Path) -> dict[str, str]:
    gx = project / "gx"
    return {p.relative_to(gx).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(gx.rglob("*")) if p.is_file() and "uncommitted" not in p.relative_to(gx).parts}


def test_the_committed_suite_is_the_code_s(project):
    """The repository's stored suite holds the checks the package runs (rewrite it with any run
    of `interactavatar data validate --gx-project .` after changing them)."""
    stored = open_context(project).suites.get(SUITE)
    assert same_expectations(stored.expectations, expectations(checks()))
    assert [e.meta["check"] for e in stored.expectations] == [c.name for c in checks()]


def test_a_run_loads_the_stored_suite_and_stores_its_result_and_data_docs(project, demo_dataset, tmp_path, capsys):
    before = _committed(project)
    stored_ids = [e["id"] for e in json.loads((project / SUITE_FILE).read_text())["expectations"]]
    report_path = tmp_path / "reports" / "validation.html"

    code = main(["data", "validate", str(demo_dataset), "--report", str(report_path), "--gx-project", str(project)])

    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.err == "", "a stored suite equal to the code's is used as it is"
    result_file = next((project / "gx" / "uncommitted" / "validations" / SUITE).rglob("*.json"))
    assert f"Great Expectations result {result_file}" in out.out
    result = json.loads(result_file.read_text())
    assert result["success"] is True and result["suite_name"] == SUITE
    # The expectations that ran are the stored ones, ids and all: the suite was read from disk.
    assert sorted(r["expectation_config"]["id"] for r in result["results"]) == sorted(stored_ids)
    assert result["meta"]["run_id"]["run_name"] == demo_dataset.name
    docs = project / "gx" / "uncommitted" / "data_docs" / "local_site"
    pages = list((docs / "validations" / SUITE).rglob("*.html"))
    assert len(pages) == 1 and (docs / "index.html").is_file() and (docs / "expectations" / f"{SUITE}.html").is_file()
    assert _committed(project) == before, "a run leaves the committed project as it was"
    # The offline report links to GX's Data Docs; the summary names the dataset relative to itself.
    assert "href='../project/gx/uncommitted/data_docs/local_site/index.html'" in report_path.read_text()
    summary = json.loads(report_path.with_suffix(".json").read_text())
    assert summary["dataset"] == Path("..", "..", *demo_dataset.relative_to(tmp_path.parent).parts).as_posix()


def test_a_failing_dataset_leaves_a_failed_stored_result(project, dataset_copy, tmp_path):
    video = next(dataset_copy.rglob("video.mp4"))
    video.write_bytes(video.read_bytes()[:200])

    report = validate(dataset_copy, ("train",), gx_project=project)
    write_reports(report, tmp_path / "validation.html")

    assert not report.success
    assert [(f.clip_id, f.check) for f in report.failures] == [(video.parent.name, "video_decodes")]
    stored = json.loads(report.stored.result.read_text())
    assert stored["success"] is False
    failed = [r for r in stored["results"] if not r["success"]]
    assert [r["expectation_config"]["meta"]["check"] for r in failed] == ["video_decodes"]
    assert report.stored.data_docs_page.is_file()
    assert report.stored.data_docs_page.is_relative_to(project / "gx" / "uncommitted" / "data_docs")


def test_a_stored_suite_unlike_the_code_s_is_rewritten(project, demo_dataset, capsys):
    suite = json.loads((project / SUITE_FILE).read_text())
    audio_length = next(e for e in suite["expectations"] if e["meta"]["check"] == "audio_length")
    audio_length["kwargs"]["max_value"] = 100
    (project / SUITE_FILE).write_text(json.dumps(suite))

    report = validate(demo_dataset, ("train",), gx_project=project)

    assert report.success
    assert f"{project / SUITE_FILE}: rewritten from the package's checks" in capsys.readouterr().err
    assert same_expectations(open_context(project).suites.get(SUITE).expectations, expectations(checks()))
