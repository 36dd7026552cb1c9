from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(model: Input[Model], metrics_file: Input[Artifact], model_name: str, gate_metrics: str,
             gate_margin: float, data_rev: str, parent_run_id: str, artifacts_destination: str,
             registration: Output[Artifact]) -> str:
    """Register the model in MLflow; the gate decides whether it becomes the champion.

    Args:
        model_name: the registered model's name.
        gate_metrics: NAME:max|min pairs the new version must beat the champion on.
        gate_margin: the absolute improvement needed on every gate metric.
        data_rev: the data revision (lineage tag).
        parent_run_id: the pipeline's MLflow run (lineage tag).
        artifacts_destination: the MLflow server's --artifacts-destination (s3://...), to turn
            proxied artifact URIs into the bucket URI KServe downloads; empty: as MLflow gives it.
        registration: JSON with the new version, whether it was promoted and the champion's URI.
    Returns:
        The champion's storage URI when this model was promoted, else "" (the deploy condition: a
        single output, since KFP's local runner cannot branch on a field of a NamedTuple).
    """
    import json
    from dataclasses import asdict
    from pathlib import Path

    import mlflow

    from interactavatar.registry import Gate, resolve
    from interactavatar.registry import register as register_model

    # Lineage: the joint stage's MLflow run (its id is kept in the model folder) carries the data
    # revision and the dataset's content hash; its parent is this pipeline run.
    training_run_id = (Path(model.path) / "mlflow_run_id").read_text().strip()
    training_tags = mlflow.MlflowClient().get_run(training_run_id).data.tags
    tags = {"data_rev": data_rev, "dataset_hash": training_tags.get("dataset_hash", ""),
            "training_run_id": training_run_id, "pipeline_run_id": parent_run_id}
    result = register_model(model.path, metrics_file.path, model_name, Gate.parse(gate_metrics, gate_margin), tags)
    uri = resolve(f"models:/{model_name}@champion", artifacts_destination=artifacts_destination or None)
    Path(registration.path).write_text(json.dumps({**asdict(result), "storage_uri": uri, **tags}, indent=1))
    registration.metadata.update(version=result.version, promoted=result.promoted, storage_uri=uri)
    return uri if result.promoted else ""
