"""`interactavatar demo`: the product on one machine, with embedded defaults.

1. Synthesise the demo dataset and version it: a git + DVC repository with a DVC remote.
2. Run the whole KFP pipeline with the local runner (MLflow on SQLite, the CPU): validate, train
   the four stages, evaluate, register (the gate promotes the first model).
3. Start the model server on 127.0.0.1 with the champion (models:/interactavatar@champion), send it
   one held-out clip's reference frame, sentence and speech, and write the mp4 it answers.
4. Print where the MLflow runs, the validation report and the evaluation report are; stop the server.

`interactavatar demo retrain` (demo_retrain.py) continues from its output: new data, a scheduled
warm-start run, the gate, a harmful run refused.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from interactavatar.io.files import write_bytes_atomic
from interactavatar.io.progress import Progress

# Budgets that learn something on a 2-core CPU in minutes (see BENCHMARKS.md); each is a
# pipeline parameter, overridable with --param.
DEMO_PARAMS = {
    "preset": "demo", "vae_steps": 900, "vae_video_crop": 88, "pim_steps": 1500, "audio_steps": 150, "joint_steps": 150,
    "batch_size": 8, "learning_rate": 1e-3, "vae_batch_size": 2, "pim_batch_size": 16, "pim_learning_rate": 2e-3,
    "eval_clips": 16, "eval_steps": 20, "apply_deployment": False,
}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="data -> pipeline -> champion -> endpoint -> mp4, on this machine")
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.add_argument("--num-clips", type=int, default=160)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter")
    demo.set_defaults(func=run_demo)
    from interactavatar.pipeline.demo_retrain import add_retrain_command

    add_retrain_command(demo.add_subparsers(dest="demo_command", metavar="{retrain}"))


def demo_environment(out: Path) -> tuple[Path, dict]:
    """The demo's output folder (absolute, created) and environment, also set in this process:
    MLflow on SQLite in that folder unless MLFLOW_TRACKING_URI names another store, no DVC analytics."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{out}/mlflow.db"),
           "DVC_NO_ANALYTICS": "1"}
    os.environ.update(env)
    return out, env


def request_video(data_dir: Path, out: Path, env: dict, seed: int, name: str = "demo") -> dict:
    """Serve the champion on loopback, send one held-out clip, write its answer (out/NAME.mp4 and
    out/NAME_motion.mp4); stop the server."""
    import numpy as np
    from PIL import Image

    from interactavatar.data.schema import read_clip, read_manifest
    from interactavatar.inference.client import EndpointClient
    from interactavatar.io.media import crop_box, read_video
    from interactavatar.train.engine import free_port

    entry = next(e for e in read_manifest(data_dir) if e.split == "test")
    meta, files = read_clip(data_dir, entry)
    reference = np.ascontiguousarray(read_video(files.video)[0][0])
    # The object image, as the release takes it: the named object, cropped from the reference.
    target = crop_box(reference, meta.target_boxes()[0])
    image, object_image = io.BytesIO(), io.BytesIO()
    Image.fromarray(reference).save(image, format="PNG")
    if target is not None:
        Image.fromarray(np.ascontiguousarray(target)).save(object_image, format="PNG")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "interactavatar.cli", "serve", "--model", "models:/interactavatar@champion",
         "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=open(out / "server.log", "w"))
    client = EndpointClient(f"http://127.0.0.1:{port}")
    try:
        client.wait_ready(timeout_s=300)
        started = time.perf_counter()
        result = client.generate(image.getvalue(), files.speech.read_bytes(), meta.text,
                                 {"seed": seed, "return_motion": True, "face_box": [float(v) for v in meta.face[0]]},
                                 object_image=object_image.getvalue() or None)
        latency = time.perf_counter() - started
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=60)
    write_bytes_atomic(out / f"{name}.mp4", result.videos["video"])
    write_bytes_atomic(out / f"{name}_motion.mp4", result.videos["motion"])
    return {"video": str(out / f"{name}.mp4"), "clip": entry.clip_id, "text": meta.text,
            "endpoint_latency_s": round(latency, 2)}


def _gx_data_docs(task_root: Path) -> Path:
    """The Data Docs index the validation task recorded in its GX project artifact's metadata (GX's
    own pages stay in the artifact: they link its stored result and assets)."""
    outputs = json.loads((task_root / "executor_output.json").read_text())
    (project,) = outputs["artifacts"]["gx_project"]["artifacts"]
    return Path(project["uri"]) / project["metadata"]["data_docs"]


def run_demo(args: argparse.Namespace) -> int:
    from interactavatar.config import preset
    from interactavatar.data.synth import SynthSpec
    from interactavatar.data.versioning import make_versioned_dataset
    from interactavatar.pipeline.commands import parse_params, run_local

    started = time.perf_counter()
    out, env = demo_environment(args.out)
    params = {**DEMO_PARAMS, **parse_params(args.param)}
    repo = out / "data-repo"
    # Three stages on the bar; the pipeline's own tasks report their steps and clips beneath it.
    progress = Progress("demo", 3, unit="stage")
    with progress.stage("synthesise and version the data"):
        revision = make_versioned_dataset(repo, args.num_clips, args.seed,
                                          SynthSpec.from_config(preset(params["preset"])), remote=out / "dvc-remote",
                                          message=f"demo data: {args.num_clips} synthetic clips")
    data_seconds = time.perf_counter() - started
    with progress.stage("run the pipeline"):
        pipeline = run_local({"data_repo": str(repo), "data_rev": revision, "seed": args.seed, **params},
                             out / "work")
    with progress.stage("serve the champion and request a video"):
        request = request_video(repo / "data" / "synth", out, env, args.seed)
    run_root = max((out / "work" / "kfp").iterdir(), key=lambda p: p.stat().st_mtime)
    # KFP names artifact files without extensions; copies a browser opens as pages.
    reports = {"validation_report": ("validate-data/report", "validation-report.html"),
               "evaluation_report": ("evaluate/report", "evaluation-report.html"),
               "metrics": ("evaluate/metrics_file", "metrics.json")}
    for source, target in reports.values():
        shutil.copyfile(run_root / source, out / target)
    summary = {
        **request, "motion": str(out / "demo_motion.mp4"),
        "data_repo": str(repo), "data_rev": revision,
        "mlflow": f"mlflow ui --backend-store-uri {env['MLFLOW_TRACKING_URI']}",
        **{name: str(out / target) for name, (_, target) in reports.items()},
        "gx_data_docs": str(_gx_data_docs(run_root / "validate-data")),
        "pipeline_artifacts": str(run_root),
        "data_s": round(data_seconds, 1), "pipeline_s": pipeline["wall_s"],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary, indent=1))
    return 0
