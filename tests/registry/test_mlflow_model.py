"""A registered version as a complete MLflow model: an input example that fits the signature, pinned
requirements that `mlflow models predict` and `mlflow models serve` run with (`--env-manager local`,
real subprocesses on a real SQLite registry), and lineage in MLflow's own terms: the training run's
dataset input names the DVC repository, revision and path, and the version is an MLflow 3 logged
model made by that run."""

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from helpers.datasets import make_data_repo
from helpers.metrics import clips, write_metrics
from helpers.train import spec

from interactavatar.config import preset
from interactavatar.data.versioning import DATA_PATH, dataset_hash
from interactavatar.io.media import read_video
from interactavatar.registry.mlflow import register
from interactavatar.registry.pyfunc import SERVING_DISTRIBUTIONS, check_example, input_example, signature
from interactavatar.train.engine import free_port
from interactavatar.train.stages import run_stage
from interactavatar.train.tracking import DIGEST_CHARS, DVCDatasetSource, dataset_source

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = str(Path(sys.executable).parent / "mlflow")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite store, also the environment's (MLflow's CLI reads it from there)."""
    monkeypatch.chdir(tmp_path)  # the file artifact store lands in ./mlruns
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _frames(video_base64: str, path: Path):
    path.write_bytes(base64.b64decode(video_base64))
    frames, _ = read_video(path)
    return frames


def _logged_model_id(version) -> str:
    """MLflow's open-source registry keeps a version's logged model in its source, models:/<model_id>
    (its SQL store keeps no `version.model_id`: it reads back None)."""
    assert version.source.startswith("models:/m-"), version.source
    return version.source.removeprefix("models:/")


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_models_predict_and_serve_run_the_registered_version(model_dir, tmp_path, store):
    register(model_dir, write_metrics(tmp_path / "m.json", clips(0.3), clips(0.0)), tracking_uri=store)
    client = mlflow.MlflowClient(store, store)
    version = client.get_model_version("interactavatar", "1")
    local = Path(mlflow.artifacts.download_artifacts(client.get_model_version_download_uri("interactavatar", "1"),
                                                     dst_path=str(tmp_path / "download")))

    # MLflow stored the example and its params, and they fit the signature.
    model = mlflow.models.Model.load(str(local))
    rows, params = model.load_input_example(str(local)), model.load_input_example_params(str(local))
    assert list(rows.columns) == ["image", "audio", "text"] and params == {"mode": "interact", "seed": 0, "steps": 2}
    check_example((rows, params), model.signature)
    assert model.model_id == _logged_model_id(version) and model.run_id == version.run_id
    # Pinned to what is installed, which is what constraints.txt pins; the package travels as code.
    pinned = set((ROOT / "constraints.txt").read_text().lower().splitlines())  # names are case-insensitive
    requirements = (local / "requirements.txt").read_text().lower().split()
    assert {line.split("==")[0] for line in requirements} == {"mlflow", *SERVING_DISTRIBUTIONS}
    assert set(requirements) <= pinned, set(requirements) - pinned
    assert (local / "code" / "interactavatar" / "registry" / "pyfunc.py").is_file()
    assert not any(local.rglob("__pycache__"))

    serving_input = local / model.saved_input_example_info["serving_input_path"]
    # As in an activated environment: `mlflow models serve` execs `uvicorn` found on PATH.
    env = os.environ | {"MLFLOW_TRACKING_URI": store, "PATH": f"{Path(MLFLOW).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([MLFLOW, "models", "predict", "-m", "models:/interactavatar/1", "-i", str(serving_input),
                    "-t", "json", "-o", str(tmp_path / "predicted.json"), "--env-manager", "local"],
                   env=env, check=True, capture_output=True, timeout=600)
    (video,) = json.loads((tmp_path / "predicted.json").read_text())["predictions"]
    # The example's speech lasts one VAE step of frames: 5 frames of the model's video.
    assert _frames(video, tmp_path / "predicted.mp4").shape == (5, *preset("tiny").video_size, 3)

    port = free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen([MLFLOW, "models", "serve", "-m", "models:/interactavatar@champion", "-h",
                                   "127.0.0.1", "-p", str(port), "--env-manager", "local", "-w", "1"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while server.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow models serve did not come up:\n{(tmp_path / 'serve.log').read_text()[-3000:]}")
        # The params reach the model through the scoring server too: one frame asked, one made.
        request = json.loads(serving_input.read_text())
        request["params"] |= {"num_frames": 1}
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", json=request, timeout=300)
        assert response.status_code == 200, response.text
        (video,) = response.json()["predictions"]
        assert _frames(video, tmp_path / "served.mp4").shape == (1, *preset("tiny").video_size, 3)
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_input_example_is_checked_against_the_signature(model_dir):
    rows, params = input_example(model_dir)
    check_example((rows, params), signature())
    with pytest.raises(mlflow.exceptions.MlflowException, match="'style' is not in the signature"):
        check_example((rows, params | {"style": "noir"}), signature())
    with pytest.raises(mlflow.exceptions.MlflowException, match="seed"):
        check_example((rows, params | {"seed": "zero"}), signature())
    with pytest.raises(mlflow.exceptions.MlflowException, match="text"):
        check_example((rows.drop(columns=["text"]), params), signature())


@pytest.mark.slow
def test_the_requirements_name_every_library_predict_imports(model_dir, tmp_path):
    """In a fresh process that records each import our modules make: load the pyfunc, predict the
    example, and import the modules other models load (the Wan VAE, LoRA). Every third-party
    distribution our code imported must be a pinned requirement."""
    probe = textwrap.dedent(f"""
        import builtins, json
        from importlib.metadata import packages_distributions
        imported, real_import = set(), builtins.__import__
        def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
            if level == 0 and (globals or {{}}).get("__name__", "").startswith("interactavatar"):
                imported.add(name.split(".")[0])
            return real_import(name, globals, locals, fromlist, level)
        builtins.__import__ = recording_import
        from interactavatar.registry.pyfunc import _load_pyfunc, input_example
        import interactavatar.model.wan_vae, interactavatar.model.lora
        rows, params = input_example({str(model_dir)!r})
        _load_pyfunc({str(model_dir)!r}).predict(rows, params={{**params, "steps": 1}})
        distributions = packages_distributions()
        print(json.dumps(sorted({{d.lower() for top in imported for d in distributions.get(top, [])}})))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = set(json.loads(result.stdout.splitlines()[-1]))
    assert {"torch", "kserve", "diffusers"} <= imported  # the probe saw the real imports
    assert imported - {"interactavatar", "mlflow"} <= {name.lower() for name in SERVING_DISTRIBUTIONS}, imported


def test_a_dataset_s_source_names_its_dvc_repository_revision_and_path(tmp_path):
    repo = make_data_repo(tmp_path, num_clips=2)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    # Inside its checkout: the checkout, its HEAD, the path in it.
    source = dataset_source(repo / DATA_PATH, None)
    assert isinstance(source, DVCDatasetSource) and source.to_dict() == {"repo": str(repo), "rev": commit,
                                                                         "path": DATA_PATH}
    # Fetched elsewhere (a pipeline task's copy): what the caller says it was fetched from, and it
    # fetches the same bytes again.
    source = dataset_source(tmp_path / "copy", commit, str(repo), DATA_PATH)
    assert DVCDatasetSource.from_json(source.to_json()).to_dict() == {"repo": str(repo), "rev": commit,
                                                                      "path": DATA_PATH}
    assert dataset_hash(source.load()) == dataset_hash(repo / DATA_PATH)
    # Under no checkout: the folder itself.
    (tmp_path / "loose").mkdir()
    assert dataset_source(tmp_path / "loose", None).to_dict() == {"uri": str(tmp_path / "loose")}



def test_any_process_finds_the_dvc_source_and_none_warns_on_stderr():
    """MLflow loads the package's entry point while `mlflow.data` is first imported: a process that
    never names our package finds the source type, and one that starts from our code (the CLI, as
    `interactavatar serve` does) does not make MLflow warn about a half-imported module."""
    source = json.dumps({"repo": "r", "rev": "c", "path": "data"})
    find = ("from mlflow.data.dataset_source_registry import get_dataset_source_from_json as get; "
            f"print(type(get({source!r}, source_type='dvc')).__name__)")
    for program in (find, f"import interactavatar.cli; {find}", f"import interactavatar.train.tracking; {find}"):
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "DVCDatasetSource", ""), program

@pytest.mark.slow
@pytest.mark.integration
def test_the_training_run_logs_its_dataset_and_the_version_is_the_logged_model_it_made(model_dir, tmp_path, store):
    repo = make_data_repo(tmp_path, num_clips=4)
    data = repo / DATA_PATH
    out = run_stage(spec("joint", data, tmp_path / "tuned", steps=1, init=str(model_dir)))
    training_run = (out / "mlflow_run_id").read_text().strip()
    client = mlflow.MlflowClient(store, store)

    # The run's dataset input: DVC's coordinates as its source, our content hash as its digest.
    (dataset_input,) = client.get_run(training_run).inputs.dataset_inputs
    dataset = dataset_input.dataset
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert dataset.source_type == "dvc" and json.loads(dataset.source) == {"repo": str(repo), "rev": commit,
                                                                           "path": DATA_PATH}
    assert dataset.name == f"{DATA_PATH}@{commit}" and dataset.digest == dataset_hash(data)[:DIGEST_CHARS]
    assert {tag.key: tag.value for tag in dataset_input.tags}["mlflow.data.context"] == "training"
    # Any process finds the source again by its type (the package's mlflow.dataset_source entry point).
    assert mlflow.data.get_source(dataset_input).to_dict() == json.loads(dataset.source)

    registration = register(out, write_metrics(tmp_path / "m.json", clips(0.3), clips(0.0)), tracking_uri=store)
    version = client.get_model_version("interactavatar", registration.version)
    logged = client.get_logged_model(_logged_model_id(version))
    # The logged model was made by the training run, and the version names both.
    assert logged.source_run_id == training_run == version.run_id and str(logged.status) == "READY"
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "interactavatar", "version": "1"}]
    assert [output.model_id for output in client.get_run(training_run).outputs.model_outputs] == [logged.model_id]
    # The registration run judged it: it takes the model in, and its metrics are the model's.
    register_run = client.get_run(registration.run_id)
    assert [model.model_id for model in register_run.inputs.model_inputs] == [logged.model_id]
    assert {metric.key: metric.value for metric in logged.metrics}["grounding_iou"] == pytest.approx(
        sum(clips(0.3)) / 8)
    assert client.get_model_version_download_uri("interactavatar", "1").startswith(logged.artifact_location)
