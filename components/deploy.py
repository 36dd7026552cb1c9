from kfp import dsl
from kfp.dsl import Artifact, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(storage_uri: str, endpoint_name: str, namespace: str, gpu: int, apply: bool, manifest: Output[Artifact]) -> str:
    """Put the champion behind a KServe InferenceService (created, or patched into a rollout).

    Args:
        storage_uri: the champion's s3:// URI (KServe's storage initializer downloads it).
        endpoint_name, namespace: the InferenceService's name and namespace.
        gpu: GPUs for the predictor (0: CPU).
        apply: False writes the manifest only (a run without a cluster).
        manifest: the InferenceService YAML.
    Returns:
        "created", "patched" or "written".
    """
    from interactavatar.orchestration import deploy as deploy_model

    return deploy_model(storage_uri, endpoint_name, namespace, manifest.path, apply=apply, gpu=gpu)
