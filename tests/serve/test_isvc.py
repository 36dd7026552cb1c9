"""The InferenceService: built from the kserve SDK's models; the committed manifest is its output."""

from pathlib import Path

import pytest
import yaml

from interactavatar.cli import main
from interactavatar.serve.isvc import build_inference_service, render_manifest

REPO = Path(__file__).parents[2]
MANIFEST = REPO / "k8s" / "serving" / "inferenceservice.yaml"


def test_committed_manifest_is_the_generators_output(capsys):
    assert main(["serve", "manifest"]) == 0
    assert MANIFEST.read_text() == capsys.readouterr().out == render_manifest(build_inference_service()), (
        "regenerate: interactavatar serve manifest > k8s/serving/inferenceservice.yaml")
    # The deploy step owns the storage URI: a manifest that carried one would revert the champion
    # whenever the manifests are applied again.
    assert "storageUri" not in yaml.safe_load(MANIFEST.read_text())["spec"]["predictor"]["model"]


def test_manifest_wires_storage_account_gpu_timeout_and_mode():
    isvc = yaml.safe_load(render_manifest(build_inference_service(storage_uri="s3://models/interactavatar/v7")))
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "interactavatar-predictor"
    assert predictor["timeout"] >= 600 and predictor["terminationGracePeriodSeconds"] >= predictor["timeout"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    model = predictor["model"]
    assert model["storageUri"] == "s3://models/interactavatar/v7"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (model["modelFormat"]["name"], model["runtime"]) == ("interactavatar", "interactavatar")
    assert "env" not in model and "AWS_" not in render_manifest(build_inference_service())


def test_cpu_manifest_asks_for_no_gpu_and_refuses_non_s3_uris():
    assert "nvidia.com/gpu" not in render_manifest(build_inference_service(gpu=0))
    # A CPU deploy keeps the local overlay's resources instead of a GPU predictor's.
    cpu = yaml.safe_load(render_manifest(build_inference_service(gpu=0)))["spec"]["predictor"]
    overlay = yaml.safe_load((REPO / "k8s/overlays/local/inferenceservice-cpu.yaml").read_text())["spec"]["predictor"]
    drop_gpu = {kind: {k: v for k, v in values.items() if v is not None}
                for kind, values in overlay["model"]["resources"].items()}
    assert cpu["model"]["resources"] == drop_gpu and "tolerations" not in cpu and "nodeSelector" not in cpu
    with pytest.raises(ValueError, match="storage_uri"):
        build_inference_service(storage_uri="/mnt/models")
