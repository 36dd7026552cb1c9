"""Which VAE the small presets train: our causal conv VAE or diffusers' `AutoencoderKLWan`, in the
`make demo` budget.

Both train with the demo's own VAE stage and budget (`train vae`, the demo's steps, batch and
learning rate, on the demo's synthetic data: same clips, same seed), each in a fresh process;
`--vae-kind wan` builds Wan2.2's architecture at the preset's compression and widths
(`VAEConfig.as_kind`). Measured per kind: parameters, the stage's wall time and its process's peak
RSS, the time to encode and decode one clip, and what its round trip keeps of the held-out clips,
scored by evaluation's own metrics (the `vae_ceiling` of `interactavatar evaluate`): the box, the
body and hand keypoints and the contact read back from the motion video, and the video's SSIM and
PSNR. The round trip bounds what the diffusion streams can reach, so it decides which VAE the demo
can afford. The reference is the causal VAE; ratios are wan / causal.

    python -m benchmarks.bench_vae [--steps 900] [--clips 160] [--video-crop 88 (0: whole frames)]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.summary import headline
from benchmarks.timing import run_child
from interactavatar.config import VAE_KINDS, preset
from interactavatar.pipeline.demo import DEMO_PARAMS

# The round trip's figures, by evaluation's metric names.
QUALITY = ("grounding_iou", "pck_body", "pck_hands", "contact_accuracy", "ssim", "psnr")


def _train(kind: str, preset_name: str, data: Path, out: Path, steps: int, batch: int, lr: float,
           crop: int | None) -> dict:
    """Run the VAE stage in a child process; its wall time and peak RSS (the child's own rusage)."""
    command = [sys.executable, "-m", "interactavatar.cli", "train", "vae", "--preset", preset_name, "--data", str(data),
               "--out", str(out), "--vae-kind", kind, "--steps", str(steps), "--batch-size", str(batch),
               "--lr", repr(lr), "--checkpoint-every", str(steps), "--log-every", str(max(steps // 10, 1)),
               *(["--video-crop", str(crop)] if crop else [])]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out.parent / 'mlflow.db'}"}
    measured = run_child(command, env, f"train vae --vae-kind {kind}")
    return {"train_s": measured["wall_s"], "s_per_step": round(measured["wall_s"] / steps, 3),
            "peak_rss_mb": measured["peak_rss_mb"]}


def _round_trip(vae_dir: Path, data: Path, preset_name: str, num_clips: int) -> dict:
    """Evaluation's metrics of the held-out clips through the VAE, and the seconds per clip."""
    from interactavatar.evaluate.run import vae_round_trip
    from interactavatar.evaluate.score import aggregate, score_clip
    from interactavatar.evaluate.truth import load_truth, split_clips
    from interactavatar.model.vae import load_vae

    vae = load_vae(vae_dir).eval()
    cfg = preset(preset_name)
    scores, seconds = [], []
    for clip in split_clips(data, "test", num_clips):
        truth = load_truth(clip, cfg)
        started = time.perf_counter()
        video, motion = vae_round_trip(vae, truth.video), vae_round_trip(vae, truth.motion)
        seconds.append(time.perf_counter() - started)
        scores.append(score_clip(video, motion, truth))
    summary = aggregate(scores)
    return {**{name: round(summary[name], 3) for name in QUALITY if summary.get(name) is not None},
            "round_trip_s_per_clip": round(sum(seconds) / len(seconds), 3),
            "params": sum(p.numel() for p in vae.parameters())}


def run(steps: int | None = None, num_clips: int = 160, eval_clips: int = 16, quick: bool = False,
        video_crop: int | None = DEMO_PARAMS["vae_video_crop"]) -> dict:
    preset_name, steps = ("tiny", 2) if quick else ("demo", steps or DEMO_PARAMS["vae_steps"])
    num_clips, eval_clips = (6, 2) if quick else (num_clips, eval_clips)
    batch, lr = DEMO_PARAMS["vae_batch_size"], DEMO_PARAMS["learning_rate"]
    crop = None if quick or not video_crop else video_crop
    from interactavatar.data.synth import SynthSpec, synthesize

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-vae-") as scratch:
        data = Path(scratch) / "data"
        synthesize(data, num_clips, seed=0, spec=SynthSpec.from_config(preset(preset_name)))
        for kind in VAE_KINDS:
            out = Path(scratch) / f"vae-{kind}"
            rows.append({"kind": kind, **_train(kind, preset_name, data, out, steps, batch, lr, crop),
                         **_round_trip(out, data, preset_name, eval_clips)})
    causal, wan = ({row["kind"]: row for row in rows}[kind] for kind in ("causal", "wan"))
    time_ratio = wan["train_s"] / causal["train_s"]
    quality = ", ".join(f"{name} {wan.get(name)} / {causal.get(name)}" for name in QUALITY)
    return {
        "title": f"VAE for the small presets: causal vs AutoencoderKLWan ({preset_name} preset, {steps} steps, "
                 f"video crops {crop or 'none'})",
        "goal": "the demo's VAE: the kind whose round trip keeps more of the held-out clips in the demo's VAE budget",
        "summary": headline("Small-preset VAE: AutoencoderKLWan / causal, VAE stage time at the demo budget",
                            "choose by round-trip quality within the make demo budget (no numeric target)",
                            latest=round(time_ratio, 3),
                            latest_text=f"time {time_ratio:.2f}x; round trip wan / causal: {quality}"),
        "rows": rows,
        "notes": [f"Data: {num_clips} synthetic clips (seed 0), the VAE stage's train split; round trip on "
                  f"{eval_clips} test clips. Budget: {steps} steps, batch {batch}, lr {lr}, 2 motion-video "
                  f"steps per video step, video steps on {crop or 'whole'}-pixel crops (the demo's).",
                  "peak_rss_mb is the training process's own maximum resident set (wait4 rusage)."],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int)
    parser.add_argument("--clips", type=int, default=160)
    parser.add_argument("--video-crop", type=int, default=DEMO_PARAMS["vae_video_crop"])
    args = parser.parse_args()
    print(json.dumps(run(steps=args.steps, num_clips=args.clips, video_crop=args.video_crop), indent=1))
