"""The registry against real MLflow stores: SQLite, and a server on loopback with S3 artifacts."""

import json
import os
import subprocess
import sys

import mlflow
import pytest
from minio import Minio

from interactavatar.registry.mlflow import CHAMPION, PREVIOUS, Gate, register, resolve, rollback


def write_metrics(path, iou, sync):
    path.write_text(json.dumps({"model": {"grounding_iou": iou, "sync_confidence": sync, "psnr": 20.0}}))
    return path


@pytest.fixture
def sqlite_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the file artifact store lands in ./mlruns
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_gate_promotes_first_and_better_models_only(model_dir, tmp_path, sqlite_uri):
    first = register(model_dir, write_metrics(tmp_path / "m1.json", 0.3, 1.0), tracking_uri=sqlite_uri,
                     tags={"data_rev": "abc123", "dataset_hash": "f00d"})
    assert first.promoted and first.champion == "1"
    worse = register(model_dir, write_metrics(tmp_path / "m2.json", 0.2, 1.5), tracking_uri=sqlite_uri)
    assert not worse.promoted and worse.champion == "1"
    better = register(model_dir, write_metrics(tmp_path / "m3.json", 0.5, 2.0), tracking_uri=sqlite_uri)
    assert better.promoted and better.champion == "3"

    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias("interactavatar", CHAMPION).version in (3, "3")
    assert client.get_model_version_by_alias("interactavatar", PREVIOUS).version in (1, "1")
    version = client.get_model_version("interactavatar", "1")
    assert version.tags["data_rev"] == "abc123" and version.tags["metric.grounding_iou"] == "0.3"

    # The artifact is the model directory itself (what KServe downloads) and a pyfunc.
    location = resolve("models:/interactavatar@champion", tracking_uri=sqlite_uri)
    local = mlflow.artifacts.download_artifacts(location, dst_path=str(tmp_path / "download"))
    assert {"config.yaml", "model.safetensors", "vae", "MLmodel"} <= set(os.listdir(local))
    assert "checkpoints" not in os.listdir(local)


def test_margin_and_rollback(model_dir, tmp_path, sqlite_uri):
    gate = Gate({"grounding_iou": "max"}, margin=0.05)
    register(model_dir, write_metrics(tmp_path / "a.json", 0.30, 1), gate=gate, tracking_uri=sqlite_uri)
    small_gain = register(model_dir, write_metrics(tmp_path / "b.json", 0.33, 1), gate=gate, tracking_uri=sqlite_uri)
    assert not small_gain.promoted
    big_gain = register(model_dir, write_metrics(tmp_path / "c.json", 0.40, 1), gate=gate, tracking_uri=sqlite_uri)
    assert big_gain.promoted and big_gain.champion == "3"

    assert rollback(gate=gate, tracking_uri=sqlite_uri) == "1"
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("interactavatar", CHAMPION).version) == "1"
    assert client.get_model_version("interactavatar", "3").tags["rolled_back"] == "true"
    # A later registration is gated against the restored champion, and the retired one stays out.
    again = register(model_dir, write_metrics(tmp_path / "d.json", 0.36, 1), gate=gate, tracking_uri=sqlite_uri)
    assert again.promoted and again.champion == "4"
    with pytest.raises(ValueError, match="no previous champion"):
        rollback(gate=Gate({"grounding_iou": "min"}), tracking_uri=sqlite_uri)


def test_gate_compares_every_metric_the_champion_has():
    gate = Gate({"grounding_iou": "max", "sync_confidence": "max"})
    champion = {"grounding_iou": 0.5, "sync_confidence": 0.4}
    assert gate.beats({"grounding_iou": 0.6, "sync_confidence": 0.4}, champion)
    assert not gate.beats({"grounding_iou": 0.6, "sync_confidence": 0.3}, champion)
    assert not gate.beats(dict(champion), champion)  # equal everywhere: nothing gained
    assert not gate.beats({"grounding_iou": 0.9}, champion)  # cannot show its sync
    # A champion scored before sync was a gate metric: the new version gains that measurement,
    # and still may not lose grounding.
    older = {"grounding_iou": 0.5}
    assert gate.beats({"grounding_iou": 0.5, "sync_confidence": 0.1}, older)
    assert not gate.beats({"grounding_iou": 0.4, "sync_confidence": 0.9}, older)


def test_bad_inputs_are_named(model_dir, tmp_path, sqlite_uri):
    with pytest.raises(ValueError, match=r"m.json.*sync_confidence"):
        (tmp_path / "m.json").write_text(json.dumps({"model": {"grounding_iou": 0.1}}))
        register(model_dir, tmp_path / "m.json", tracking_uri=sqlite_uri)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        register(model_dir, tmp_path / "missing.json", tracking_uri=sqlite_uri)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        register(tmp_path, write_metrics(tmp_path / "ok.json", 0.1, 0.1), tracking_uri=sqlite_uri)
    with pytest.raises(ValueError, match="NAME:max"):
        Gate.parse("grounding_iou", 0.0)


@pytest.mark.integration
def test_concurrent_registrations_on_a_server_with_s3_artifacts(model_dir, tmp_path, local_stack):
    """Registrations racing each other, in separate processes, against an MLflow server whose
    artifacts live on S3: afterwards exactly one champion, the best, and the gate's order."""
    env = {**os.environ, **local_stack}
    scores = [0.31, 0.52, 0.47, 0.12]
    paths = [write_metrics(tmp_path / f"race{i}.json", s, s) for i, s in enumerate(scores)]
    name = "race"
    processes = [
        subprocess.Popen([sys.executable, "-m", "interactavatar.cli", "register", "--model", str(model_dir),
                          "--metrics", str(p), "--name", name], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for p in paths
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    server = local_stack["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(tracking_uri=server, registry_uri=server)
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert float(champion.tags["metric.grounding_iou"]) == max(scores)
    assert {r["version"] for r in results} == {"1", "2", "3", "4"}
    assert sum(r["promoted"] for r in results) >= 1
    # The champion's URI is the S3 location KServe's storage initializer downloads.
    uri = resolve(f"models:/{name}@champion", tracking_uri=server,
                  artifacts_destination=local_stack["MLFLOW_ARTIFACTS_DESTINATION"])
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = Minio(local_stack["AWS_ENDPOINT_URL"].removeprefix("http://"), local_stack["AWS_ACCESS_KEY_ID"],
               local_stack["AWS_SECRET_ACCESS_KEY"], secure=False)
    names = {o.object_name.removeprefix(prefix).lstrip("/") for o in s3.list_objects(bucket, prefix, recursive=True)}
    assert {"config.yaml", "model.safetensors", "MLmodel", "vae/model.safetensors"} <= names


def test_pyfunc_predicts_playable_mp4s_from_base64_rows(model_dir, tmp_path):
    """What `mlflow.pyfunc.load_model(...)` gives: rows of base64 PNG + WAV + text -> base64 mp4s
    with the speech muxed in, encoded in memory."""
    import base64

    from helpers.media import png_bytes, wav_bytes

    from interactavatar.config import preset
    from interactavatar.io.media import has_audio_stream, read_video
    from interactavatar.registry.pyfunc import _load_pyfunc

    generator = _load_pyfunc(str(model_dir))
    row = {"image": base64.b64encode(png_bytes()).decode(), "audio": base64.b64encode(wav_bytes()).decode(),
           "text": "The man lifts the red cup"}
    outputs = generator.predict([row, row | {"text": "The man waves"}], params={"steps": 2})
    assert len(outputs) == 2
    (tmp_path / "video.mp4").write_bytes(base64.b64decode(outputs[0]))
    frames, fps = read_video(tmp_path / "video.mp4")
    assert frames.shape == (preset("tiny").num_frames, *preset("tiny").video_size, 3) and fps == 25
    assert has_audio_stream(tmp_path / "video.mp4")
