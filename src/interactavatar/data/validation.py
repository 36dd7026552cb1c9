"""Dataset validation: per-clip facts gathered by reading (never writing) the dataset, checked by a
Great Expectations suite, reported per clip with reasons, as HTML and JSON.

The suite runs through a GX checkpoint (`gx_project.py`): in a file-backed project (the
repository's `gx/`) the suite is stored and loaded from disk, and each run stores its validation
result and updates GX's Data Docs; without a project, in memory. The HTML report written here is
the offline one (GX's pages load their styles from the web) and links to GX's Data Docs when there
are some. The JSON summary is a DVC metric: the paths it holds are relative to its own folder, so
that a clone elsewhere records the same file.

The facts table has one row per manifest line: what meta.json says next to what the media files
actually hold (container type, decoded frame count and rate, audio rate and length), plus counts of
bad keypoint and box values with the first one's field. Each expectation in the suite carries the
check's name, and every failing row is turned into "<clip>: <reason>" from that row's facts; a
reason names the file (meta.json, the video or audio it names, manifest.jsonl:LINE) and the field.

Files are found as the loader finds them (`schema.read_clip`): a path that leaves the dataset or a
link on the way is the `paths_safe` failure, and nothing behind it is read.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interactavatar.data.gx_project import (
    REQUIRED_SPLITS,
    SUITE,
    StoredRun,
    clip_checkpoint,
    find_stored_run,
    open_context,
    run_checkpoint,
)
from interactavatar.data.schema import (
    MANIFEST,
    META,
    SPLITS,
    ClipMeta,
    ManifestEntry,
    UnsafePathError,
    read_clip,
    read_manifest,
)
from interactavatar.data.versioning import portable_path
from interactavatar.io.files import write_text_atomic
from interactavatar.io.media import audio_info, probe_video, read_audio

SAMPLE_RATE = 16000


@dataclass
class Check:
    """One expectation and how to word a failing row's reason from its facts."""

    name: str
    expectation: Callable[[], Any]
    reason: Callable[[pd.Series], str]


# Checks that stand without meta.json; for a clip whose meta.json is unreadable, or whose files
# are refused as unsafe, only these are reported, the rest being consequences.
MANIFEST_CHECKS = ("paths_safe", "meta_readable", "unique_ids", "split_present", "split_known",
                   "splits_required")
# What the first bytes of a clip's video and audio file must be: an MP4 (ISO base media: a box
# size, then "ftyp") and a RIFF WAVE. A PNG or a WAV renamed video.mp4 may still decode, as the
# wrong thing; checking the type names the real fault.
SIGNATURES = {"video": ("an MP4", lambda head: head[4:8] == b"ftyp"),
              "audio": ("a WAV", lambda head: head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE")}


@dataclass
class Failure:
    clip_id: str
    path: str
    check: str
    reason: str


@dataclass
class ValidationReport:
    dataset: Path
    success: bool
    num_clips: int
    failures: list[Failure]
    checks: list[dict[str, Any]]
    # Where GX stored the run's result and Data Docs (a file-backed project), else None.
    stored: StoredRun | None = None

    def summary(self, folder: Path) -> dict[str, Any]:
        """What the JSON summary holds, its paths relative to `folder` (the summary's own)."""
        return {"dataset": portable_path(self.dataset, folder), "success": self.success,
                "num_clips": self.num_clips, "failures": [asdict(f) for f in self.failures], "checks": self.checks}


def clip_facts(root: Path, entry: ManifestEntry) -> dict[str, Any]:
    """What one clip's files say about it; `*_error` columns hold why a file could not be read."""
    facts: dict[str, Any] = {"clip_id": entry.clip_id, "path": entry.path, "split": entry.split,
                             "line": entry.line}
    try:
        meta, files = read_clip(root, entry)
    except UnsafePathError as err:
        return facts | {"path_error": str(err)}
    except (OSError, ValueError) as err:
        return facts | {"meta_error": str(err)}
    facts |= {"meta_clip_id": meta.clip_id, "meta_split": meta.split, "meta_frames": meta.num_frames,
              "meta_fps": round(meta.fps, 3), "meta_width": meta.width, "meta_height": meta.height,
              "text": meta.text.strip(), "video_file": meta.video, "audio_file": meta.audio or meta.video}
    facts |= _value_facts(meta)
    try:
        _check_signature(files.video, "video")
        video = probe_video(files.video)
        facts |= {"video_frames": video.num_frames, "video_fps": round(video.fps, 3),
                  "video_width": video.width, "video_height": video.height}
    except (OSError, ValueError) as err:
        facts["video_error"] = str(err)
    facts |= _audio_facts(files.speech, meta, facts.get("video_frames", meta.num_frames))
    return facts


def _check_signature(path: Path, field: str) -> None:
    """Refuse `path` unless it starts as meta.json's `field` (video or audio) requires."""
    kind, matches = SIGNATURES[field]
    with path.open("rb") as handle:
        head = handle.read(12)
    if not matches(head):
        raise ValueError(f"{path}: not {kind} file (it starts with {head[:8]!r})")


def _value_facts(meta: ClipMeta) -> dict[str, Any]:
    """For each kind of bad value, how many keypoints or boxes hold one and the field of the first:
    not finite (fps too), visible keypoints outside the frame, confidences outside [0, 1], boxes
    leaving the frame or inverted. A non-finite entry counts only as that."""
    points = {name: getattr(meta, name) for name in ("body", "left_hand", "right_hand")}
    boxes = {"face": meta.face} | {f"objects[{f}][{i}].box": box.as_array()
                                   for f, frame in enumerate(meta.objects) for i, box in enumerate(frame)}
    finite = {name: np.isfinite(values).all(-1) for name, values in (points | boxes).items()}
    nonfinite = [("fps", np.array(not np.isfinite(meta.fps)))] + [(name, ~ok) for name, ok in finite.items()]
    outside, confidence, left_frame = [], [], []
    for name, values in points.items():
        x, y, conf = np.moveaxis(values, -1, 0)
        off = (x < 0) | (x > meta.width) | (y < 0) | (y > meta.height)
        outside.append((name, finite[name] & (conf > 0) & off))
        confidence.append((name, finite[name] & ((conf < 0) | (conf > 1))))
    for name, values in boxes.items():
        x0, y0, x1, y1 = np.moveaxis(values, -1, 0)
        off = (x0 < 0) | (y0 < 0) | (x1 > meta.width) | (y1 > meta.height)
        left_frame.append((name, finite[name] & (off | (x1 < x0) | (y1 < y0))))
    facts: dict[str, Any] = {}
    for column, flagged in (("nonfinite", nonfinite), ("points_outside", outside),
                            ("confidence_outside", confidence), ("boxes_outside", left_frame)):
        facts[column], facts[f"{column}_at"] = _flagged(flagged)
    return facts


def _flagged(masks: list[tuple[str, np.ndarray]]) -> tuple[int, str | None]:
    """(field name, boolean mask over its entries) pairs -> (entries flagged, "field[i][j]" of the first)."""
    count, first = 0, None
    for name, mask in masks:
        hits = np.argwhere(mask)
        count += len(hits)
        if first is None and len(hits):
            first = name + "".join(f"[{i}]" for i in hits[0])
    return count, first


def _audio_facts(source: Path, meta: ClipMeta, video_frames: int) -> dict[str, Any]:
    try:
        if meta.audio:
            _check_signature(source, "audio")
            rate, samples = audio_info(source)
        else:  # the speech is the video's audio track
            rate, samples = SAMPLE_RATE, len(read_audio(source, SAMPLE_RATE))
    except (OSError, ValueError, RuntimeError) as err:
        return {"audio_error": f"{source.name}: {err}"}
    return {"audio_sample_rate": rate,
            "audio_minus_video_frames": round(samples / rate * meta.fps - video_frames, 3)}


def facts_table(root: str | Path) -> pd.DataFrame:
    root = Path(root)
    rows = [clip_facts(root, entry) for entry in read_manifest(root)]
    frame = pd.DataFrame(rows)
    frame.insert(0, "row", range(len(frame)))
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame


COLUMNS = ("path_error", "meta_error", "meta_clip_id", "meta_split", "meta_frames", "meta_fps", "meta_width",
           "meta_height", "text", "video_file", "audio_file", "nonfinite", "nonfinite_at", "points_outside",
           "points_outside_at", "confidence_outside", "confidence_outside_at", "boxes_outside", "boxes_outside_at",
           "video_error", "video_frames", "video_fps", "video_width", "video_height", "audio_error",
           "audio_sample_rate", "audio_minus_video_frames")


def checks(required_splits: tuple[str, ...] = ("train",)) -> list[Check]:
    """The suite; `required_splits` must each hold at least one clip (a training set needs train,
    a set of release test cases has only test). The expectation takes them as the suite parameter
    REQUIRED_SPLITS, so the suite itself is the same for every choice; only the reason names them."""
    import great_expectations.expectations as gxe

    suite = [
        Check("paths_safe", lambda: gxe.ExpectColumnValuesToBeNull(column="path_error"),
              lambda r: f"unsafe path: {r.path_error}"),
        Check("meta_readable", lambda: gxe.ExpectColumnValuesToBeNull(column="meta_error"),
              lambda r: f"{META} unreadable: {r.meta_error}"),
        Check("unique_ids", lambda: gxe.ExpectColumnValuesToBeUnique(column="clip_id"),
              lambda r: f"{_line(r)}: field clip_id: {r.clip_id!r} appears more than once"),
        Check("split_present", lambda: gxe.ExpectColumnValuesToNotBeNull(column="split"),
              lambda r: f"{_line(r)}: field split is missing"),
        Check("split_known", lambda: gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
              lambda r: f"{_line(r)}: field split: {r.split!r} is not one of {', '.join(SPLITS)}"),
        Check("split_matches", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="split", column_B="meta_split", ignore_row_if="either_value_is_missing"),
              lambda r: f"{META}: field split: {r.meta_split!r}, but {_line(r)} says {r.split!r}"),
        Check("meta_split_present", lambda: gxe.ExpectColumnValuesToNotBeNull(column="meta_split"),
              lambda r: f"{META}: field split is missing"),
        Check("id_matches", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="clip_id", column_B="meta_clip_id", ignore_row_if="either_value_is_missing"),
              lambda r: f"{META}: field clip_id: {r.meta_clip_id!r}, but {_line(r)} says {r.clip_id!r}"),
        Check("text_present", lambda: gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
              lambda r: f"{META}: field text is empty"),
        Check("video_decodes", lambda: gxe.ExpectColumnValuesToBeNull(column="video_error"),
              lambda r: f"{META}: field video: {r.video_error}"),
        Check("frame_count", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="video_frames", column_B="meta_frames", ignore_row_if="either_value_is_missing"),
              lambda r: f"{META}: field num_frames: {r.meta_frames:.0f}, but {r.video_file} has "
                        f"{r.video_frames:.0f} frames"),
        Check("fps", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="video_fps", column_B="meta_fps", ignore_row_if="either_value_is_missing"),
              lambda r: f"{META}: field fps: {r.meta_fps}, but {r.video_file} runs at {r.video_fps} fps"),
        Check("frame_size", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="video_width", column_B="meta_width", ignore_row_if="either_value_is_missing"),
              lambda r: f"{META}: field width: {r.meta_width:.0f}, but {r.video_file} is "
                        f"{r.video_width:.0f} wide"),
        Check("frame_height", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="video_height", column_B="meta_height", ignore_row_if="either_value_is_missing"),
              lambda r: f"{META}: field height: {r.meta_height:.0f}, but {r.video_file} is "
                        f"{r.video_height:.0f} high"),
        Check("audio_readable", lambda: gxe.ExpectColumnValuesToBeNull(column="audio_error"),
              lambda r: f"{META}: field audio: {r.audio_error}"),
        Check("sample_rate", lambda: gxe.ExpectColumnValuesToBeInSet(
            column="audio_sample_rate", value_set=[SAMPLE_RATE]),
              lambda r: f"{META}: field audio: {r.audio_file} is at {r.audio_sample_rate:.0f} Hz, "
                        f"expected {SAMPLE_RATE}"),
        Check("audio_length", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="audio_minus_video_frames", min_value=-1, max_value=1),
              lambda r: f"{META}: field audio: {r.audio_file}'s length differs from {r.video_file}'s by "
                        f"{r.audio_minus_video_frames:+.2f} frames"),
        Check("finite_values", lambda: gxe.ExpectColumnValuesToBeBetween(column="nonfinite", max_value=0),
              lambda r: f"{META}: field {r.nonfinite_at}: NaN or infinite ({r.nonfinite:.0f} such in the clip)"),
        Check("points_inside", lambda: gxe.ExpectColumnValuesToBeBetween(column="points_outside", max_value=0),
              lambda r: f"{META}: field {r.points_outside_at}: visible keypoint outside the "
                        f"{r.meta_width:.0f}x{r.meta_height:.0f} frame ({r.points_outside:.0f} such in the clip)"),
        Check("confidences_in_range", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="confidence_outside", max_value=0),
              lambda r: f"{META}: field {r.confidence_outside_at}: keypoint confidence outside [0, 1] "
                        f"({r.confidence_outside:.0f} such in the clip)"),
        Check("boxes_inside", lambda: gxe.ExpectColumnValuesToBeBetween(column="boxes_outside", max_value=0),
              lambda r: f"{META}: field {r.boxes_outside_at}: box leaves the {r.meta_width:.0f}x"
                        f"{r.meta_height:.0f} frame or is inverted ({r.boxes_outside:.0f} such in the clip)"),
        Check("splits_required", lambda: gxe.ExpectColumnDistinctValuesToContainSet(
            column="split", value_set={"$PARAMETER": REQUIRED_SPLITS}),
              lambda r: f"the dataset needs clips in every split of {', '.join(required_splits)}"),
    ]
    return suite


def expectations(all_checks: list[Check]) -> list:
    """The checks' expectations, each tagged with its check's name (how a result finds its reason)."""
    made = []
    for check in all_checks:
        expectation = check.expectation()
        expectation.meta = {"check": check.name}
        made.append(expectation)
    return made


def _line(row: pd.Series) -> str:
    return f"{MANIFEST}:{row.line:.0f}"


def validate(root: str | Path, required_splits: tuple[str, ...] = ("train",),
             gx_project: str | Path | None = None) -> ValidationReport:
    """Gather the facts, run the suite through the checkpoint, name every failing clip with its
    reasons. `gx_project`: the folder holding the file-backed GX project (`gx/`, made when
    missing) that stores the suite, the result and the Data Docs; None: an ephemeral context."""
    root = Path(root)
    facts = facts_table(root)
    all_checks = checks(required_splits)
    context = open_context(None if gx_project is None else Path(gx_project))
    checkpoint = clip_checkpoint(context, expectations(all_checks), stored=gx_project is not None)
    identifier, result = run_checkpoint(checkpoint, facts, required_splits, run_name=root.name)

    by_name = {check.name: check for check in all_checks}
    failures, summary = [], []
    for outcome in result.results:
        check = by_name[outcome.expectation_config.meta["check"]]
        unexpected = outcome.result.get("unexpected_index_list") or []
        rows = sorted({int(item["row"]) for item in unexpected})
        summary.append({"check": check.name, "expectation": outcome.expectation_config.type,
                        "success": bool(outcome.success), "unexpected": len(rows)})
        if outcome.success:
            continue
        if not rows:  # a dataset-level expectation
            failures.append(Failure("(dataset)", ".", check.name, check.reason(pd.Series(dtype=object))))
        for row in rows:
            facts_row = facts.iloc[row]
            unread = isinstance(facts_row.meta_error, str) or isinstance(facts_row.path_error, str)
            if unread and check.name not in MANIFEST_CHECKS:
                continue
            failures.append(Failure(str(facts_row.clip_id), str(facts_row.path), check.name,
                                    check.reason(facts_row)))
    failures.sort(key=lambda f: (f.path, f.check))
    stored = find_stored_run(context, identifier) if gx_project is not None else None
    return ValidationReport(root, bool(result.success), len(facts), failures, summary, stored)


def write_reports(report: ValidationReport, html_path: str | Path) -> Path:
    """Write the HTML report at `html_path` and the JSON summary beside it (.json); returns the
    JSON path. Both are written atomically."""
    html_path = Path(html_path)
    json_path = html_path.with_suffix(".json")
    write_text_atomic(json_path, json.dumps(report.summary(json_path.parent), indent=1) + "\n")
    write_text_atomic(html_path, _html(report, html_path.parent))
    return json_path


def _html(report: ValidationReport, folder: Path) -> str:
    """The offline report; its title names the dataset relative to `folder` (the report's own),
    as the summary does, and a file-backed run links to GX's Data Docs index (the index, not the
    run's page: the report stays the same for the same dataset)."""
    dataset = html.escape(portable_path(report.dataset, folder))
    docs = "" if report.stored is None else (
        f"<p>Great Expectations' own Data Docs (they load their styles from the web): "
        f"<a href='{html.escape(portable_path(report.stored.data_docs_index, folder))}'>index</a>.</p>")
    verdict = "passed" if report.success else f"failed ({len(report.failures)} problems)"
    check_rows = "".join(
        f"<tr class={'ok' if c['success'] else 'bad'}><td>{c['check']}</td><td>{c['expectation']}</td>"
        f"<td>{'yes' if c['success'] else 'no'}</td><td>{c['unexpected']}</td></tr>" for c in report.checks)
    failure_rows = "".join(
        f"<tr><td>{html.escape(f.clip_id)}</td><td>{html.escape(f.path)}</td><td>{f.check}</td>"
        f"<td>{html.escape(f.reason)}</td></tr>" for f in report.failures)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Data validation: {dataset}</title>
<style>body{{font-family:sans-serif}} td,th{{border:1px solid #ccc;padding:2px 6px}}
table{{border-collapse:collapse}} .bad{{background:#fdd}} .ok{{background:#dfd}}</style></head><body>
<h1>Data validation: {dataset}</h1>
<p>{report.num_clips} clips; Great Expectations suite <code>{SUITE}</code> {verdict}.</p>{docs}
<h2>Expectations</h2><table><tr><th>check</th><th>expectation</th><th>passed</th><th>failing clips</th></tr>
{check_rows}</table>
<h2>Failing clips</h2><table><tr><th>clip</th><th>folder</th><th>check</th><th>reason</th></tr>
{failure_rows}</table></body></html>
"""
