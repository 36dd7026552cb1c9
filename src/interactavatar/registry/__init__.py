"""The MLflow model registry: registration, the gate that picks the champion, rollback, lineage, and
the pyfunc flavour that makes a registered version loadable with `mlflow.pyfunc`."""
