"""Dataset validation: per-clip facts gathered by reading (never writing) the dataset, checked by a
Great Expectations suite, reported per clip with reasons, as HTML and JSON.

The facts table has one row per manifest line: what meta.json says next to what the media files
actually hold (decoded frame count and rate, audio rate and length), plus counts of bad keypoint
and box values. Each expectation in the suite carries the check's name, and every failing row is
turned into "<clip>: <reason>" from that row's facts.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interactavatar.data.schema import SPLITS, ClipMeta, read_manifest, read_meta
from interactavatar.io.files import write_text_atomic
from interactavatar.io.media import audio_info, probe_video, read_audio

# GX would otherwise phone home (analytics) from an ephemeral context.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
SAMPLE_RATE = 16000


@dataclass
class Check:
    """One expectation and how to word a failing row's reason from its facts."""

    name: str
    expectation: Callable[[], Any]
    reason: Callable[[pd.Series], str]


# Checks that stand without meta.json; for a clip whose meta.json is unreadable only these (and
# the unreadable meta itself) are reported, the rest being consequences.
MANIFEST_CHECKS = ("meta_readable", "unique_ids", "split_present", "split_known", "splits_required")


@dataclass
class Failure:
    clip_id: str
    path: str
    check: str
    reason: str


@dataclass
class ValidationReport:
    dataset: str
    success: bool
    num_clips: int
    failures: list[Failure]
    checks: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "success": self.success, "num_clips": self.num_clips,
                "failures": [asdict(f) for f in self.failures], "checks": self.checks}


def clip_facts(root: Path, clip_id: str, path: str, split: str | None) -> dict[str, Any]:
    """What one clip's files say about it; `*_error` columns hold why a file could not be read."""
    facts: dict[str, Any] = {"clip_id": clip_id, "path": path, "split": split}
    clip_dir = root / path
    try:
        meta = read_meta(clip_dir)
    except (OSError, ValueError) as err:
        return facts | {"meta_error": str(err)}
    facts |= {"meta_error": None, "meta_clip_id": meta.clip_id, "meta_split": meta.split,
              "meta_frames": meta.num_frames, "meta_fps": round(meta.fps, 3), "meta_width": meta.width,
              "meta_height": meta.height, "text": meta.text.strip()}
    facts |= _value_facts(meta)
    try:
        video = probe_video(clip_dir / meta.video)
        facts |= {"video_error": None, "video_frames": video.num_frames, "video_fps": round(video.fps, 3),
                  "video_width": video.width, "video_height": video.height}
    except (OSError, ValueError) as err:
        facts["video_error"] = str(err)
    facts |= _audio_facts(clip_dir, meta, facts.get("video_frames", meta.num_frames))
    return facts


def _value_facts(meta: ClipMeta) -> dict[str, Any]:
    points = np.concatenate([meta.body, meta.left_hand, meta.right_hand], axis=1)
    boxes = [b.as_array() for frame in meta.objects for b in frame] + list(meta.face)
    boxes = np.array(boxes).reshape(-1, 4)
    visible = points[..., 2] > 0
    xy = points[visible][:, :2]
    with np.errstate(invalid="ignore"):
        points_outside = int(((xy[:, 0] < 0) | (xy[:, 0] > meta.width) | (xy[:, 1] < 0) | (xy[:, 1] > meta.height)).sum())
        boxes_outside = int(((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > meta.width)
                             | (boxes[:, 3] > meta.height) | (boxes[:, 2] < boxes[:, 0])
                             | (boxes[:, 3] < boxes[:, 1])).sum())
    return {"nonfinite_values": int((~np.isfinite(points)).sum() + (~np.isfinite(boxes)).sum()),
            "points_outside": points_outside, "boxes_outside": boxes_outside}


def _audio_facts(clip_dir: Path, meta: ClipMeta, video_frames: int) -> dict[str, Any]:
    source = clip_dir / (meta.audio or meta.video)
    try:
        if meta.audio:
            rate, samples = audio_info(source)
        else:  # the speech is the video's audio track
            rate, samples = SAMPLE_RATE, len(read_audio(source, SAMPLE_RATE))
    except (OSError, ValueError, RuntimeError) as err:
        return {"audio_error": f"{source.name}: {err}"}
    return {"audio_error": None, "audio_sample_rate": rate,
            "audio_minus_video_frames": round(samples / rate * meta.fps - video_frames, 3)}


def facts_table(root: str | Path) -> pd.DataFrame:
    root = Path(root)
    rows = [clip_facts(root, e.clip_id, e.path, e.split) for e in read_manifest(root)]
    frame = pd.DataFrame(rows)
    frame.insert(0, "row", range(len(frame)))
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame


COLUMNS = ("meta_error", "meta_clip_id", "meta_split", "meta_frames", "meta_fps", "meta_width", "meta_height",
           "text", "nonfinite_values", "points_outside", "boxes_outside", "video_error", "video_frames",
           "video_fps", "video_width", "video_height", "audio_error", "audio_sample_rate",
           "audio_minus_video_frames")


def checks(required_splits: tuple[str, ...] = ("train",)) -> list[Check]:
    """The suite; `required_splits` must each hold at least one clip (a training set needs train,
    a set of release test cases has only test)."""
    import great_expectations.expectations as gxe

    suite = [
        Check("meta_readable", lambda: gxe.ExpectColumnValuesToBeNull(column="meta_error"),
              lambda r: f"meta.json unreadable: {r.meta_error}"),
        Check("unique_ids", lambda: gxe.ExpectColumnValuesToBeUnique(column="clip_id"),
              lambda r: f"clip_id {r.clip_id!r} appears more than once in the manifest"),
        Check("split_present", lambda: gxe.ExpectColumnValuesToNotBeNull(column="split"),
              lambda r: "no split in manifest.jsonl"),
        Check("split_known", lambda: gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
              lambda r: f"split {r.split!r} is not one of {', '.join(SPLITS)}"),
        Check("split_matches", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="split", column_B="meta_split", ignore_row_if="either_value_is_missing"),
              lambda r: f"manifest split {r.split!r} but meta.json split {r.meta_split!r}"),
        Check("meta_split_present", lambda: gxe.ExpectColumnValuesToNotBeNull(column="meta_split"),
              lambda r: "meta.json has no split"),
        Check("id_matches", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="clip_id", column_B="meta_clip_id", ignore_row_if="either_value_is_missing"),
              lambda r: f"manifest clip_id {r.clip_id!r} but meta.json says {r.meta_clip_id!r}"),
        Check("text_present", lambda: gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
              lambda r: "text is empty"),
        Check("video_decodes", lambda: gxe.ExpectColumnValuesToBeNull(column="video_error"),
              lambda r: f"video does not decode: {r.video_error}"),
        Check("frame_count", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="video_frames", column_B="meta_frames", ignore_row_if="either_value_is_missing"),
              lambda r: f"video has {r.video_frames:.0f} frames, meta.json says num_frames={r.meta_frames:.0f}"),
        Check("fps", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="video_fps", column_B="meta_fps", ignore_row_if="either_value_is_missing"),
              lambda r: f"video runs at {r.video_fps} fps, meta.json says fps={r.meta_fps}"),
        Check("frame_size", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="video_width", column_B="meta_width", ignore_row_if="either_value_is_missing"),
              lambda r: f"video is {r.video_width:.0f} wide, meta.json says width={r.meta_width:.0f}"),
        Check("frame_height", lambda: gxe.ExpectColumnPairValuesToBeEqual(
            column_A="video_height", column_B="meta_height", ignore_row_if="either_value_is_missing"),
              lambda r: f"video is {r.video_height:.0f} high, meta.json says height={r.meta_height:.0f}"),
        Check("audio_readable", lambda: gxe.ExpectColumnValuesToBeNull(column="audio_error"),
              lambda r: f"audio missing or unreadable: {r.audio_error}"),
        Check("sample_rate", lambda: gxe.ExpectColumnValuesToBeInSet(column="audio_sample_rate", value_set=[SAMPLE_RATE]),
              lambda r: f"audio sample rate {r.audio_sample_rate:.0f} Hz, expected {SAMPLE_RATE}"),
        Check("audio_length", lambda: gxe.ExpectColumnValuesToBeBetween(
            column="audio_minus_video_frames", min_value=-1, max_value=1),
              lambda r: f"audio length differs from the video by {r.audio_minus_video_frames:+.2f} frames"),
        Check("finite_values", lambda: gxe.ExpectColumnValuesToBeBetween(column="nonfinite_values", max_value=0),
              lambda r: f"{r.nonfinite_values:.0f} keypoint/box values are NaN or infinite"),
        Check("points_inside", lambda: gxe.ExpectColumnValuesToBeBetween(column="points_outside", max_value=0),
              lambda r: f"{r.points_outside:.0f} visible keypoints lie outside the frame"),
        Check("boxes_inside", lambda: gxe.ExpectColumnValuesToBeBetween(column="boxes_outside", max_value=0),
              lambda r: f"{r.boxes_outside:.0f} object/face boxes leave the frame or are inverted"),
    ]
    if required_splits:
        suite.append(Check(
            "splits_required",
            lambda: gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(required_splits)),
            lambda r: f"the dataset needs clips in every split of {', '.join(required_splits)}"))
    return suite


def validate(root: str | Path, required_splits: tuple[str, ...] = ("train",)) -> ValidationReport:
    """Gather the facts, run the suite, name every failing clip with its reasons."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = Path(root)
    facts = facts_table(root)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_pandas("dataset").add_dataframe_asset("clips")
             .add_batch_definition_whole_dataframe("all clips"))
    suite = context.suites.add(gx.ExpectationSuite(name="clip_dataset"))
    all_checks = checks(required_splits)
    for check in all_checks:
        expectation = check.expectation()
        expectation.meta = {"check": check.name}
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="clips", data=batch, suite=suite))
    result = definition.run(batch_parameters={"dataframe": facts}, result_format={
        "result_format": "COMPLETE", "unexpected_index_column_names": ["row"]})

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
            if isinstance(facts_row.meta_error, str) and check.name not in MANIFEST_CHECKS:
                continue
            failures.append(Failure(str(facts_row.clip_id), str(facts_row.path), check.name, check.reason(facts_row)))
    failures.sort(key=lambda f: (f.path, f.check))
    return ValidationReport(str(root), bool(result.success), len(facts), failures, summary)


def write_reports(report: ValidationReport, html_path: str | Path) -> Path:
    """Write the HTML report at `html_path` and the JSON summary beside it (.json); returns the
    JSON path. Both are written atomically."""
    html_path = Path(html_path)
    json_path = html_path.with_suffix(".json")
    write_text_atomic(json_path, json.dumps(report.summary(), indent=1) + "\n")
    write_text_atomic(html_path, _html(report))
    return json_path


def _html(report: ValidationReport) -> str:
    verdict = "passed" if report.success else f"failed ({len(report.failures)} problems)"
    check_rows = "".join(
        f"<tr class={'ok' if c['success'] else 'bad'}><td>{c['check']}</td><td>{c['expectation']}</td>"
        f"<td>{'yes' if c['success'] else 'no'}</td><td>{c['unexpected']}</td></tr>" for c in report.checks)
    failure_rows = "".join(
        f"<tr><td>{html.escape(f.clip_id)}</td><td>{html.escape(f.path)}</td><td>{f.check}</td>"
        f"<td>{html.escape(f.reason)}</td></tr>" for f in report.failures)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Data validation: {html.escape(report.dataset)}</title>
<style>body{{font-family:sans-serif}} td,th{{border:1px solid #ccc;padding:2px 6px}}
table{{border-collapse:collapse}} .bad{{background:#fdd}} .ok{{background:#dfd}}</style></head><body>
<h1>Data validation: {html.escape(report.dataset)}</h1>
<p>{report.num_clips} clips; Great Expectations suite <code>clip_dataset</code> {verdict}.</p>
<h2>Expectations</h2><table><tr><th>check</th><th>expectation</th><th>passed</th><th>failing clips</th></tr>
{check_rows}</table>
<h2>Failing clips</h2><table><tr><th>clip</th><th>folder</th><th>check</th><th>reason</th></tr>
{failure_rows}</table></body></html>
"""
