"""The Great Expectations side of dataset validation: the context, and in it the suite, the
validation definition and the checkpoint that `validation.py` runs.

Two kinds of context:
- file-backed (a project folder holding `gx/`, as the repository's root does): the suite, the
  validation definition and the checkpoint are stored there and loaded from disk; each run stores
  its validation result under `gx/uncommitted/validations/` and updates GX's own Data Docs under
  `gx/uncommitted/data_docs/` (GX's `gx/.gitignore` keeps `uncommitted/` out of git). GX's pages
  load their styles from the web; `validation.py`'s report is the offline one.
- ephemeral (no project: the pipeline's step, the benchmarks): the same objects in memory, no
  Data Docs (an ephemeral context would build them into a temporary folder nobody reads).

The checks are code (`validation.checks`: each expectation with the sentence that explains a
failing clip), so the code's suite is the reference: a stored suite that differs is rewritten from
it (and said so), and one that matches is left as it is, so a run leaves the committed files alone.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# GX would otherwise send usage statistics from every context.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

DATA_SOURCE = "dataset"
ASSET = "clips"
BATCH = "all clips"
SUITE = "clip_dataset"
DEFINITION = "clips"
CHECKPOINT = "clip_dataset"
DOCS_SITE = "local_site"
# The suite parameter holding the splits that must have clips (`--required-splits`), so that one
# stored suite serves a training set (train) and a set of release test cases (none).
REQUIRED_SPLITS = "required_splits"
# Every failing row named by its position in the facts table.
RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["row"]}


@dataclass
class StoredRun:
    """Where a file-backed run left its validation result and GX's Data Docs page for it."""

    result: Path
    data_docs_page: Path
    data_docs_index: Path


def open_context(project: Path | None):
    """The file-backed context of `project` (created there, with GX's layout, when it has none),
    or an ephemeral one when `project` is None. Progress bars off: they would flood the logs."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral") if project is None else \
        gx.get_context(mode="file", project_root_dir=str(project))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def clip_checkpoint(context, expectations: list, stored: bool):
    """The checkpoint that validates a dataset's facts table with `expectations` (each carrying its
    check's name in `meta`). `stored`: the context is file-backed; its objects are loaded, made
    when missing, and the suite rewritten when it differs from `expectations`."""
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    if stored:
        try:
            checkpoint = context.checkpoints.get(CHECKPOINT)
        except DataContextError:
            checkpoint = None
        if checkpoint is not None:
            if same_expectations(checkpoint.validation_definitions[0].suite.expectations, expectations):
                return checkpoint
            # Rewritten in place (same name and id), so the stored validation definition still
            # names it; the checkpoint is read again to hold the new suite.
            context.suites.add_or_update(gx.ExpectationSuite(name=SUITE, expectations=expectations))
            print(f"{_suite_file(context)}: rewritten from the package's checks (it differed)", file=sys.stderr)
            return context.checkpoints.get(CHECKPOINT)
    batch = (context.data_sources.add_or_update_pandas(DATA_SOURCE).add_dataframe_asset(ASSET)
             .add_batch_definition_whole_dataframe(BATCH))
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=SUITE, expectations=expectations))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=DEFINITION, data=batch, suite=suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="update data docs", site_names=[DOCS_SITE])] if stored else []
    return context.checkpoints.add_or_update(gx.Checkpoint(
        name=CHECKPOINT, validation_definitions=[definition], actions=actions, result_format=RESULT_FORMAT))


def same_expectations(stored: list, expectations: list) -> bool:
    """The same expectations in the same order, ids aside (a stored one has an id, the code's not)."""
    def configuration(expectation) -> dict:
        return {k: v for k, v in expectation.configuration.to_json_dict().items() if k != "id"}

    return [configuration(e) for e in stored] == [configuration(e) for e in expectations]


def _suite_file(context) -> Path:
    return Path(context.root_directory) / "expectations" / f"{SUITE}.json"


def run_checkpoint(checkpoint, facts, required_splits: tuple[str, ...], run_name: str) -> tuple[Any, Any]:
    """Validate `facts` (the dataset's facts table); returns (result identifier, suite result)."""
    from great_expectations.core.run_identifier import RunIdentifier

    outcome = checkpoint.run(batch_parameters={"dataframe": facts},
                             expectation_parameters={REQUIRED_SPLITS: list(required_splits)},
                             run_id=RunIdentifier(run_name=run_name))
    ((identifier, result),) = outcome.run_results.items()
    return identifier, result


def find_stored_run(context, identifier) -> StoredRun:
    """The files a file-backed run wrote: its stored result and its Data Docs pages."""
    store = context.validation_results_store
    result = _local_path(store.store_backend.get_url_for_key(store.key_to_tuple(identifier)))
    page, index = (_local_path(context.get_docs_sites_urls(resource_identifier=resource, site_name=DOCS_SITE)[0]
                               ["site_url"]) for resource in (identifier, None))
    return StoredRun(result=result, data_docs_page=page, data_docs_index=index)


def _local_path(url: str) -> Path:
    """GX's file:// URL -> the path (GX escapes the characters a URL cannot hold)."""
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(url).path))
