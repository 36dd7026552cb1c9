from kfp import dsl
from kfp.dsl import HTML, Dataset, Metrics, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_data(data_repo: str, data_rev: str, data_path: str, dataset: Output[Dataset],
                  report: Output[HTML], summary: Output[Metrics]) -> str:
    """Fetch the dataset at a DVC revision and validate it with Great Expectations.

    Args:
        data_repo: git repository (URL or local path) whose DVC files track the dataset.
        data_rev: git revision of the data (a tag, branch or commit; empty: HEAD).
        data_path: the dataset folder inside the repository (e.g. data/synth).
        dataset: the fetched dataset, passed on to training and evaluation.
        report: the validation report (HTML).
        summary: clip count and failure count.
    Returns:
        The resolved data revision, the lineage tag of everything trained on it.
    """
    import sys

    from interactavatar.data.validation import validate, write_reports
    from interactavatar.orchestration import fetch_dataset

    revision = fetch_dataset(data_repo, data_rev, data_path, dataset.path)
    result = validate(dataset.path)
    write_reports(result, report.path)
    summary.log_metric("clips", result.num_clips)
    summary.log_metric("failures", len(result.failures))
    dataset.metadata.update({"data_rev": revision, "data_repo": data_repo, "data_path": data_path})
    if not result.success:
        for failure in result.failures:
            print(f"{failure.path}: {failure.check}: {failure.reason}", file=sys.stderr)
        raise ValueError(f"{data_repo}@{revision}:{data_path}: {len(result.failures)} validation failure(s)")
    return revision
