"""The registry against real MLflow stores: SQLite, and a server on loopback with S3 artifacts."""

import json
import os
import subprocess
import sys

import mlflow
import pytest
from helpers.metrics import clips, write_metrics
from minio import Minio

from interactavatar.registry.gate import Gate
from interactavatar.registry.mlflow import (
    CHAMPION,
    PREVIOUS,
    champion_version,
    change_policy,
    register,
    resolve,
    rollback,
    show_policy,
)


@pytest.fixture
def sqlite_uri(tmp_path, monkeypatch):
    """A fresh SQLite store, also the environment's (for the CLI and a bare MlflowClient)."""
    monkeypatch.chdir(tmp_path)  # the file artifact store lands in ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_the_gate_compares_each_version_with_the_champion_in_one_evaluation(model_dir, tmp_path, sqlite_uri):
    first = register(model_dir, write_metrics(tmp_path / "m1.json", clips(0.3), clips(0.0)), tracking_uri=sqlite_uri,
                     tags={"data_rev": "abc123", "dataset_hash": "f00d"})
    assert first.promoted and first.champion == "1" and "against the floor" in first.reason

    # Equal to the champion on every clip: no gain shown.
    same = register(model_dir, write_metrics(tmp_path / "m2.json", clips(0.3), clips(0.3), baseline="1"),
                    tracking_uri=sqlite_uri)
    assert not same.promoted and same.champion == "1" and "does not lie above the margin 0" in same.reason
    # Better in box IoU, but its lip sync is clearly worse than the guard tolerates.
    worse_sync = register(model_dir, write_metrics(tmp_path / "m3.json", clips(0.5), clips(0.3), baseline="1",
                                                   sync_confidence=0.2), tracking_uri=sqlite_uri)
    assert not worse_sync.promoted and "guard sync_confidence lost" in worse_sync.reason
    better = register(model_dir, write_metrics(tmp_path / "m4.json", clips(0.5), clips(0.3), baseline="1"),
                      tracking_uri=sqlite_uri)
    assert better.promoted and better.champion == "4"

    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias("interactavatar", CHAMPION).version in (4, "4")
    assert client.get_model_version_by_alias("interactavatar", PREVIOUS).version in (1, "1")
    tags = client.get_model_version("interactavatar", "4").tags
    assert tags["gate.passed"] == "true" and tags["gate.baseline_version"] == "1"
    assert float(tags["gate.grounding_iou.low"]) > 0 and tags["eval_set.clips"] == "8"
    tags = client.get_model_version("interactavatar", "1").tags
    assert tags["data_rev"] == "abc123" and float(tags["metric.grounding_iou"]) == pytest.approx(sum(clips(0.3)) / 8) and tags["gate.baseline_version"] == ""
    # The registration run records the intervals.
    assert client.get_run(better.run_id).data.metrics["gate_grounding_iou_low"] > 0

    # The artifact is the model directory itself (what KServe downloads) and a pyfunc.
    location = resolve("models:/interactavatar@champion", tracking_uri=sqlite_uri)
    local = mlflow.artifacts.download_artifacts(location, dst_path=str(tmp_path / "download"))
    assert {"config.yaml", "model.safetensors", "vae", "MLmodel"} <= set(os.listdir(local))
    assert "checkpoints" not in os.listdir(local)


def test_a_file_scored_against_another_version_than_the_champion_is_refused(model_dir, tmp_path, sqlite_uri):
    register(model_dir, write_metrics(tmp_path / "a.json", clips(0.3), clips(0.0)), tracking_uri=sqlite_uri)
    with pytest.raises(ValueError, match=r"b.json: scored against no baseline .* champion of interactavatar is "
                                         r"version 1.*--baseline models:/interactavatar/1"):
        register(model_dir, write_metrics(tmp_path / "b.json", clips(0.9), clips(0.0)), tracking_uri=sqlite_uri)
    with pytest.raises(ValueError, match=r"scored against models:/interactavatar@champion \(version 7\), but the "
                                         r"champion of interactavatar is version 1"):
        register(model_dir, write_metrics(tmp_path / "c.json", clips(0.9), clips(0.3), baseline="7"),
                 tracking_uri=sqlite_uri)
    assert len(mlflow.MlflowClient().search_model_versions("name='interactavatar'")) == 1  # nothing written


def test_margin_and_rollback(model_dir, tmp_path, sqlite_uri):
    change_policy("interactavatar", Gate.parse("grounding_iou:max:0.05"), "a 0.05 margin", tracking_uri=sqlite_uri)
    register(model_dir, write_metrics(tmp_path / "a.json", clips(0.30), clips(0.0)), tracking_uri=sqlite_uri)
    small_gain = register(model_dir, write_metrics(tmp_path / "b.json", clips(0.33), clips(0.30), baseline="1"),
                          tracking_uri=sqlite_uri)
    assert not small_gain.promoted and "margin 0.05" in small_gain.reason
    big_gain = register(model_dir, write_metrics(tmp_path / "c.json", clips(0.40), clips(0.30), baseline="1"),
                        tracking_uri=sqlite_uri)
    assert big_gain.promoted and big_gain.champion == "3"

    assert rollback(tracking_uri=sqlite_uri) == "1"
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("interactavatar", CHAMPION).version) == "1"
    assert client.get_model_version("interactavatar", "3").tags["rolled_back"] == "true"
    # A later registration is gated against the restored champion, and the retired one stays out.
    with pytest.raises(ValueError, match="version 3.*champion of interactavatar is version 1"):
        register(model_dir, write_metrics(tmp_path / "d.json", clips(0.5), clips(0.4), baseline="3"),
                 tracking_uri=sqlite_uri)
    again = register(model_dir, write_metrics(tmp_path / "e.json", clips(0.36), clips(0.30), baseline="1"),
                     tracking_uri=sqlite_uri)
    assert again.promoted and again.champion == "4"
    assert rollback(tracking_uri=sqlite_uri) == "1"
    # Rollback can always remove a bad champion: the first one too, leaving none.
    assert rollback(tracking_uri=sqlite_uri) is None
    assert champion_version("interactavatar", sqlite_uri) is None
    with pytest.raises(ValueError, match="interactavatar has no champion to roll back"):
        rollback(tracking_uri=sqlite_uri)
    # With no champion the next version must beat the floor again.
    fresh = register(model_dir, write_metrics(tmp_path / "f.json", clips(0.3), clips(0.0)), tracking_uri=sqlite_uri)
    assert fresh.promoted and fresh.champion == "5" and "against the floor" in fresh.reason


def test_the_gate_policy_is_the_registry_s_and_changes_only_by_a_recorded_admin_command(model_dir, tmp_path,
                                                                                       sqlite_uri):
    from interactavatar.cli import main
    from interactavatar.registry.policy import ADMIN_EXPERIMENT

    # Before any version: the default, not yet recorded. The first registration records it.
    assert show_policy(tracking_uri=sqlite_uri)["gate_policy.set_by"] == "unrecorded"
    register(model_dir, write_metrics(tmp_path / "a.json", clips(0.3), clips(0.0)), tracking_uri=sqlite_uri)
    recorded = show_policy(tracking_uri=sqlite_uri)
    assert recorded["gate_policy.spec"] == Gate.parse().spec() and recorded["gate_policy.set_by"] == "default"
    # A caller cannot bring its own gate any more: register has no --gate or --margin.
    with pytest.raises(SystemExit):
        main(["register", "--model", str(model_dir), "--metrics", str(tmp_path / "a.json"), "--gate", "psnr:max:-1"])
    # A negative margin promotes a worse version: refused, unless an admin says so on purpose.
    with pytest.raises(ValueError, match="margin -1 is negative.*--allow-worse"):
        Gate.parse("grounding_iou:max:-1")
    with pytest.raises(ValueError, match="level 0.2 must lie in"):
        Gate.parse(level=0.2)
    with pytest.raises(ValueError, match="--reason is required"):
        change_policy("interactavatar", Gate.parse("grounding_iou:max:0.1"), " ", tracking_uri=sqlite_uri)
    assert main(["registry", "policy", "set", "--gate", "grounding_iou:max:0.1,ssim:max:0.02", "--level", "0.9",
                 "--reason", "tighter after incident 7"]) == 0
    now = show_policy(tracking_uri=sqlite_uri)
    assert now["gate_policy.spec"] == "grounding_iou:max:0.1,ssim:max:0.02" and now["gate_policy.level"] == "0.9"
    assert now["gate_policy.reason"] == "tighter after incident 7" and "@" in now["gate_policy.set_by"]
    # The change is recorded: old and new policy, who and why.
    client = mlflow.MlflowClient()
    (change,) = client.search_runs([client.get_experiment_by_name(ADMIN_EXPERIMENT).experiment_id])
    assert change.data.params["previous_spec"] == Gate.parse().spec()
    assert change.data.params["spec"] == now["gate_policy.spec"] and change.data.tags["reason"] == now["gate_policy.reason"]
    # Every registration uses it: a 0.05 gain no longer clears the 0.1 margin, and the version
    # records the policy that decided.
    small = register(model_dir, write_metrics(tmp_path / "b.json", clips(0.35), clips(0.3), baseline="1"),
                     tracking_uri=sqlite_uri)
    assert not small.promoted and "margin 0.1" in small.reason
    tags = client.get_model_version("interactavatar", small.version).tags
    assert tags["gate.spec"] == now["gate_policy.spec"] and tags["gate.level"] == "0.9"


def test_concurrent_registrations_on_a_fresh_sqlite_store_all_succeed(model_dir, tmp_path):
    """Six registrations started at once on a store nobody has opened yet. Before the store lock, 5
    of 6 failed on the store (racing on its schema migration); now each gets the gate's answer."""
    uri = f"sqlite:///{tmp_path}/fresh.db"
    processes = [subprocess.Popen([sys.executable, "-m", "interactavatar.cli", "register", "--model", str(model_dir),
                                   "--metrics", str(write_metrics(tmp_path / f"m{i}.json", clips(0.3), clips(0.0)))],
                                  env={**os.environ, "MLFLOW_TRACKING_URI": uri}, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
    outputs = [process.communicate(timeout=600) for process in processes]
    registered = [json.loads(out.splitlines()[-1]) for process, (out, _) in zip(processes, outputs, strict=True)
                  if process.returncode == 0]
    refused = [err for process, (_, err) in zip(processes, outputs, strict=True) if process.returncode != 0]
    # All were scored against the floor: the first registered became champion, and each other one
    # was refused by the gate's rule (a champion now exists: score against it), naming it.
    assert len(registered) == 1 and registered[0]["promoted"] and registered[0]["version"] == "1", outputs
    assert len(refused) == 5 and all("scored against no baseline" in err and "champion of interactavatar is version 1"
                                     in err for err in refused), refused
    client = mlflow.MlflowClient(uri, uri)
    assert [str(v.version) for v in client.search_model_versions("name='interactavatar'")] == ["1"]


def test_bad_inputs_are_named(model_dir, tmp_path, sqlite_uri):
    with pytest.raises(ValueError, match=r"m.json: no 'per_clip'"):
        (tmp_path / "m.json").write_text(json.dumps({"model": {"grounding_iou": 0.1}, "eval_set": {}}))
        register(model_dir, tmp_path / "m.json", tracking_uri=sqlite_uri)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        register(model_dir, tmp_path / "missing.json", tracking_uri=sqlite_uri)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        register(tmp_path, write_metrics(tmp_path / "ok.json", clips(0.3), clips(0.0)), tracking_uri=sqlite_uri)
    nan = write_metrics(tmp_path / "nan.json", clips(0.3), clips(0.0))
    nan.write_text(nan.read_text().replace('"psnr": 20.0', '"psnr": NaN'))
    with pytest.raises(ValueError, match=r"nan.json: model metric\(s\) \['psnr'\] are not finite"):
        register(model_dir, nan, tracking_uri=sqlite_uri)
    with pytest.raises(ValueError, match=r"rev.json: evaluated on data revision abc123, but the version is tagged "
                                         r"as trained on data_rev def456"):
        register(model_dir, write_metrics(tmp_path / "rev.json", clips(0.3), clips(0.0)), tags={"data_rev": "def456"},
                 tracking_uri=sqlite_uri)
    no_floor = write_metrics(tmp_path / "nofloor.json", clips(0.3), clips(0.0))
    no_floor.write_text(no_floor.read_text().replace('"floor"', '"other"'))
    with pytest.raises(ValueError, match=r"nofloor.json: per_clip has no 'floor' scores \(evaluated with --no-floor\)"):
        register(model_dir, no_floor, tracking_uri=sqlite_uri)
    assert not mlflow.MlflowClient().search_registered_models()


@pytest.mark.integration
def test_concurrent_registrations_on_a_server_with_s3_artifacts(model_dir, tmp_path, local_stack):
    """Registrations racing each other, in separate processes, against an MLflow server whose
    artifacts live on S3: afterwards exactly one champion, the first that passed the gate."""
    env = {**os.environ, **local_stack}
    name = "race"
    paths = [write_metrics(tmp_path / f"race{i}.json", clips(0.3 + 0.1 * i), clips(0.0)) for i in range(4)]
    processes = [
        subprocess.Popen([sys.executable, "-m", "interactavatar.cli", "register", "--model", str(model_dir),
                          "--metrics", str(p), "--name", name], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for p in paths
    ]
    results, refused = [], []
    for process in processes:
        out, err = process.communicate(timeout=240)
        if process.returncode == 0:
            results.append(json.loads(out.strip().splitlines()[-1]))
        else:  # it saw the winner's alias before writing: refused, nothing registered
            assert "scored against no baseline" in err and f"champion of {name} is version" in err, err[-2000:]
            refused.append(process)
    server = local_stack["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(tracking_uri=server, registry_uri=server)
    champion = str(client.get_model_version_by_alias(name, CHAMPION).version)
    # All passed against the floor: the first registered takes the title; the rest are told who did.
    assert champion == "1" and len(results) + len(refused) == 4
    assert [r["promoted"] for r in results] == [r["version"] == "1" for r in results]
    assert all("took the title first" in r["reason"] for r in results if not r["promoted"])
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
    # Decoded as the endpoint decodes: a row declaring a 4 MHz rate is refused from its header.
    from helpers.media import with_declared_rate

    lying = row | {"audio": base64.b64encode(with_declared_rate(wav_bytes(), 4_000_000)).decode()}
    with pytest.raises(ValueError, match="4000000"):
        generator.predict([lying], params={"steps": 2})


def test_a_registered_version_is_a_pyfunc_with_a_signature_whose_params_reach_the_model(model_dir, tmp_path,
                                                                                       sqlite_uri):
    """`mlflow.pyfunc.load_model("models:/...")`: the signature names the columns and the options as
    params, so `predict(params=...)` is applied (and checked as the endpoint checks it), not dropped."""
    import base64

    import numpy as np
    import pandas as pd
    from helpers.media import png_bytes, wav_bytes

    from interactavatar.io.media import read_video

    register(model_dir, write_metrics(tmp_path / "m.json", clips(0.3), clips(0.0)), tracking_uri=sqlite_uri)
    model = mlflow.pyfunc.load_model("models:/interactavatar/1")
    signature = model.metadata.signature
    assert [c.name for c in signature.inputs.inputs] == ["image", "audio", "text", "object_image", "pose_image"]
    assert {p.name for p in signature.params.params} == {"mode", "seed", "steps", "num_frames", "text_scale",
                                                         "audio_scale", "face_box"}
    rows = pd.DataFrame([{"image": base64.b64encode(png_bytes()).decode(),
                          "audio": base64.b64encode(wav_bytes()).decode(), "text": "The man waves"}])
    def frames(params: dict) -> np.ndarray:
        (video,) = model.predict(rows, params=params)
        (tmp_path / "video.mp4").write_bytes(base64.b64decode(video))
        return read_video(tmp_path / "video.mp4")[0]

    # The params reach the pipeline: num_frames sets the clip's length (the tiny model's 5, or 1).
    assert len(frames({"steps": 1})) == 5 and len(frames({"steps": 1, "num_frames": 1})) == 1
    with pytest.raises(Exception, match="options.steps"):
        model.predict(rows, params={"steps": 10**9})
