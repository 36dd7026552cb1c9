"""The training stages: vae, pim (PIM pretrain), audio (AIM audio pretrain), joint (fine-tune).

Every stage runs the same loop under DeepSpeed, checkpoints into `<out>/checkpoints`, resumes when
run again on the same --out, tracks itself in MLflow, and ends by writing its model directory at
the top of --out: a VAE directory for `vae`, a full InteractAvatar model directory for the others.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from interactavatar.config import preset
from interactavatar.lineage import data_revision, dataset_hash
from interactavatar.model.aligner import MotionToVideoAligner
from interactavatar.model.directory import build_bundle, load_bundle, write_model_files
from interactavatar.model.vae import CausalVAE
from interactavatar.train import engine as ds
from interactavatar.train.checkpoint import CheckpointManager
from interactavatar.train.curriculum import Curriculum
from interactavatar.train.features import FeatureCache, build_cache
from interactavatar.train.objectives import (
    AudioObjective,
    JointObjective,
    PIMObjective,
    VAEObjective,
    palette_class_weights,
)
from interactavatar.train.sampling import BatchLayout, StepRandomness, clip_indices
from interactavatar.train.tracking import StageRun, peak_memory_mb

STAGES = ("vae", "pim", "audio", "joint")
MODEL_ENTRIES = ["config.yaml", "model.safetensors", "vae", "text_encoder", "audio_encoder"]


@dataclass
class StageSpec:
    stage: str
    preset: str
    data: Path
    out: Path
    steps: int = 100
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    engine: ds.EngineConfig = field(default_factory=ds.EngineConfig)
    vae: Path | None = None
    pim: Path | None = None
    audio: Path | None = None
    curriculum: Curriculum = field(default_factory=Curriculum)
    injection: str = "residual"
    gradient_checkpointing: bool = False
    split: str = "train"
    # Frames per VAE training sample (1 + 4k); None: whole clips. A causal conv VAE trained on
    # windows decodes the frames past the window length badly (demo preset: per-frame L1 of the
    # video round trip 17 up to frame 8, then rising to 40 after 9-frame windows; 5-frame windows
    # haze every latent after the second), so the demo trains on its whole 17-frame clips.
    vae_window_frames: int | None = None
    # Motion-video steps per video step in the VAE stage. At the demo sizes a motion step (64 px)
    # costs about a quarter of a video step (128 px), and the hand lives in the motion videos: 2
    # instead of 1 (900 steps instead of 600, the same 300 video steps, 20% more time) took the
    # demo VAE's motion round trip from PCK body 0.35 / contact 0.21 to 0.66 / 0.25.
    vae_motion_steps: int = 2
    parent_run_id: str | None = None
    data_rev: str | None = None
    track: bool = True

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"train: unknown stage {self.stage!r}; choose one of {STAGES}")
        needs = {"pim": ["vae"], "audio": ["vae"], "joint": ["vae", "pim", "audio"]}.get(self.stage, [])
        for name in needs:
            if getattr(self, name) is None:
                raise ValueError(f"train {self.stage}: --{name} (the {name} stage's output directory) is required")
        if self.steps < 1 or self.checkpoint_every < 1:
            raise ValueError("train: --steps and --checkpoint-every must be at least 1")
        if self.vae_motion_steps < 1:
            raise ValueError(f"train vae: --motion-steps {self.vae_motion_steps} must be at least 1")


def _clip_dataset(spec: StageSpec, cfg):
    from interactavatar.data.dataset import ClipDataset

    return ClipDataset(spec.data, cfg, split=spec.split)


def _prepare(spec: StageSpec, device: torch.device):
    """(objective module, bundle or vae, feature cache) for the stage."""
    cfg = preset(spec.preset)
    if spec.stage == "vae":
        vae = CausalVAE(cfg.vae)
        dataset = _clip_dataset(spec, cfg)
        pixels = [item[key] for item in (dataset[i] for i in range(len(dataset))) for key in ("video", "motion")]
        # Videos and motion videos differ in size: keep them as two tensors, alternating steps.
        videos = torch.stack(pixels[0::2])
        motions = torch.stack(pixels[1::2])
        return VAEObjective(vae), vae, (videos, motions, palette_class_weights(motions))

    if spec.stage == "joint":
        bundle = load_bundle(spec.audio)
        pim_weights = load_file(str(Path(spec.pim) / "model.safetensors"))
        bundle.model.pim.load_state_dict({k[4:]: v for k, v in pim_weights.items() if k.startswith("pim.")})
        # A fresh zero-initialised aligner: joint training starts from AIM's audio-pretrained behaviour.
        bundle.cfg = dataclasses.replace(bundle.cfg, injection=spec.injection)
        bundle.model.aligner = MotionToVideoAligner(
            bundle.cfg.pim.dim, bundle.cfg.aim.dim, bundle.cfg.aim.num_layers, spec.injection
        )
    else:
        cfg = dataclasses.replace(cfg, injection=spec.injection)
        with torch.random.fork_rng():
            torch.manual_seed(spec.seed)
            bundle = build_bundle(cfg, seed=spec.seed)
        bundle.vae = CausalVAE.from_pretrained(spec.vae)
        bundle.cfg = dataclasses.replace(bundle.cfg, vae=bundle.vae.cfg)
    bundle.model.set_gradient_checkpointing(spec.gradient_checkpointing)
    streams = {"pim": {"motion"}, "audio": {"video", "audio"}, "joint": {"video", "motion", "audio"}}[spec.stage]
    cache = build_cache(_clip_dataset(spec, bundle.cfg), bundle, streams, device)
    shift = bundle.cfg.sampler.shift
    objective = {
        "pim": lambda: PIMObjective(bundle.model, spec.curriculum, shift),
        "audio": lambda: AudioObjective(bundle.model, shift),
        "joint": lambda: JointObjective(bundle.model, shift),
    }[spec.stage]()
    return objective, bundle, cache


def _micro_batch(spec: StageSpec, data, layout: BatchLayout, step: int, micro: int,
                 device: torch.device) -> tuple[dict, StepRandomness]:
    """This rank's slice of micro-batch `micro` of optimizer step `step`, and its random draws."""
    samples = layout.samples(step, micro)
    randomness = StepRandomness.keyed(spec.seed, step, samples)
    if spec.stage == "vae":
        videos, motions, motion_weights = data
        # Videos and motion videos differ in size: a whole step takes one kind, each kind in its
        # own epoch order.
        motion, kind_step = vae_step_kind(step, spec.vae_motion_steps)
        source = motions if motion else videos
        clips = clip_indices(layout.samples(kind_step, micro), len(source), spec.seed + motion)
        window = min(spec.vae_window_frames or source.shape[2], source.shape[2])
        last_start = source.shape[2] - window
        starts = randomness.each(lambda generator: torch.randint(last_start + 1, (1,), generator=generator))
        windows = [(clip, slice(start, start + window)) for clip, start in zip(clips, starts, strict=True)]
        batch = {"pixels": torch.stack([source[clip, :, frames] for clip, frames in windows])}
        if motion:
            batch["weights"] = torch.stack([motion_weights[clip, :, frames] for clip, frames in windows])
        return {key: value.to(device) for key, value in batch.items()}, randomness
    cache: FeatureCache = data
    return cache.select(clip_indices(samples, len(cache), spec.seed), device), randomness


def vae_step_kind(step: int, motion_steps: int) -> tuple[bool, int]:
    """(whether VAE-stage step `step` trains on motion videos, its index among that kind's steps):
    one video step, then `motion_steps` motion-video steps, over and over."""
    cycle, phase = divmod(step, 1 + motion_steps)
    return (False, cycle) if phase == 0 else (True, cycle * motion_steps + phase - 1)


def _write_outputs(spec: StageSpec, trained, data) -> None:
    """The final model directory at the top of --out, each file replaced atomically."""
    if spec.stage == "vae":
        _calibrate_latent_scale(trained, videos=data[0])
        trained.save_pretrained(spec.out)
        return
    write_model_files(trained, spec.out)


@torch.no_grad()
def _calibrate_latent_scale(vae: CausalVAE, videos: torch.Tensor) -> None:
    """Store the latents' mean and std so that diffusion sees unit-scale latents (as Wan's VAE does).

    videos: the stage's training videos [N, 3, F, H, W], already in memory; the first 16 suffice.
    """
    vae.cfg.latent_mean, vae.cfg.latent_std = 0.0, 1.0
    latents = vae.eval().encode(videos[:16].to(next(vae.parameters()).device))
    vae.cfg.latent_mean, vae.cfg.latent_std = latents.mean().item(), max(latents.std().item(), 1e-3)


def _global_batch_mean(sums: dict[str, torch.Tensor], layout: BatchLayout) -> dict[str, float]:
    """A step's metrics, summed over this rank's micro-batches, as means over the global batch.

    A collective: every rank calls it, with the same names (what decides them, such as the
    curriculum task, is drawn per step).
    """
    values = torch.stack(list(sums.values()))
    torch.distributed.all_reduce(values)
    return dict(zip(sums, (values / (layout.accumulation * layout.ranks)).tolist(), strict=True))


def run_stage(spec: StageSpec, stop_after: int | None = None) -> Path:
    """Train (or resume) a stage to `spec.steps` optimizer steps and write its model directory.

    Under torchrun every process runs this: each trains on its own slice of the global batch
    (`BatchLayout`), all of them write and read DeepSpeed's checkpoints, and rank 0 alone tracks
    the run and writes the model directory.
    `stop_after`: end early after that many steps this call (a simulated preemption for tests).
    """
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    device = ds.device()
    objective, trained, data = _prepare(spec, device)
    engine = ds.create_engine(objective, spec.engine)
    checkpoints = CheckpointManager(spec.out / "checkpoints")
    state = checkpoints.load(engine)
    start = state["step"] if state else 0
    # Every process is a data-parallel replica: there is no tensor or pipeline parallelism.
    layout = BatchLayout(spec.engine.micro_batch_size, spec.engine.gradient_accumulation_steps,
                         ranks=engine.world_size, rank=engine.global_rank)
    is_main = engine.global_rank == 0

    with StageRun(spec.stage, spec.out / "mlflow_run_id", spec.parent_run_id, enabled=spec.track and is_main,
                  checkpoint_run_id=state and state.get("run_id")) as run:
        if run.enabled:
            run.log_params({"stage": dataclasses.asdict(spec) | {"out": str(spec.out), "data": str(spec.data)},
                            "model": getattr(trained, "cfg", None) and dataclasses.asdict(trained.cfg),
                            "global_batch": layout.global_batch, "processes": layout.ranks})
            # Hashing reads the whole dataset: only the rank that records it does.
            run.set_tags({"data_rev": spec.data_rev or data_revision(spec.data),
                          "dataset_hash": dataset_hash(spec.data), "stage": spec.stage, "preset": spec.preset})
        # Building the model, caching features and starting DeepSpeed happen before the run opens.
        run.log_metrics({"setup_s": time.perf_counter() - started}, step=start)
        window_start, window_steps = time.perf_counter(), 0
        for step in range(start, spec.steps):
            sums: dict[str, torch.Tensor] = {}
            for micro in range(layout.accumulation):
                batch, randomness = _micro_batch(spec, data, layout, step, micro, device)
                outputs = engine(batch, randomness)
                # DeepSpeed averages over the accumulation steps and ranks, and steps the optimizer
                # after the last micro-batch only.
                engine.backward(outputs["loss"])
                engine.step()
                for name, value in outputs.items():
                    sums[name] = sums.get(name, 0) + value.detach()
            window_steps += 1
            done = step + 1
            if done % spec.log_every == 0 or done == spec.steps:
                metrics = _global_batch_mean(sums, layout)
                elapsed = time.perf_counter() - window_start
                metrics.update(lr=engine.get_lr()[0], samples_per_s=window_steps * layout.global_batch / elapsed,
                               **peak_memory_mb())
                run.log_metrics(metrics, step=done)
                window_start, window_steps = time.perf_counter(), 0
            if done % spec.checkpoint_every == 0 or done == spec.steps:
                checkpoints.save(engine, done, {"run_id": run.run_id})
            if stop_after is not None and done - start >= stop_after:
                return spec.out
        if is_main:
            _write_outputs(spec, trained, data)
            run.log_model_directory(spec.out, MODEL_ENTRIES)
    return spec.out
