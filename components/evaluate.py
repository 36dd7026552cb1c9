from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(dataset: Input[Dataset], model: Input[Model], split: str, num_clips: int, steps: int, seed: int,
             parent_run_id: str, metrics: Output[Metrics], metrics_file: Output[Artifact], report: Output[HTML]):
    """Generate on the held-out split and score the model, an untrained floor and the ground truth.

    Args:
        split: the held-out split (test).
        num_clips: clips to evaluate (0: all).
        steps: sampling steps (0: the preset's).
        metrics: the model's metrics, shown in the KFP UI.
        metrics_file: metrics.json, read by the register step.
        report: the HTML report.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from interactavatar.evaluate.run import METRICS_FILE, REPORT_FILE, EvaluationSettings
    from interactavatar.evaluate.run import evaluate as run_evaluation

    with tempfile.TemporaryDirectory() as out:
        result = run_evaluation(EvaluationSettings(
            model_dir=Path(model.path), data_dir=Path(dataset.path), out_dir=Path(out), split=split,
            num_clips=num_clips or None, steps=steps or None, seed=seed, parent_run_id=parent_run_id or None))
        shutil.copyfile(Path(out) / METRICS_FILE, metrics_file.path)
        shutil.copyfile(Path(out) / REPORT_FILE, report.path)
    for name, value in result["model"].items():
        if isinstance(value, (int, float)):
            metrics.log_metric(name, value)
