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
from interactavatar.train.objectives import AudioObjective, JointObjective, PIMObjective, VAEObjective
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
    # The VAE is convolutional and causal: short windows (1 + 4 frames) teach it what whole clips
    # would, at a fraction of the cost.
    vae_window_frames: int = 5
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


def sample_indices(position: int, batch_size: int, count: int, seed: int) -> torch.Tensor:
    """The clips of micro-batch `position`: epoch-wise permutations seeded by (seed, epoch)."""
    first = position * batch_size
    indices = []
    for sample in range(first, first + batch_size):
        epoch, offset = divmod(sample, count)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        indices.append(order[offset].item())
    return torch.tensor(indices)


def _step_generator(seed: int, position: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + position)


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
        return VAEObjective(vae), vae, (videos, motions)

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


def _batch(spec: StageSpec, data, position: int, device: torch.device) -> dict:
    batch_size = spec.engine.micro_batch_size
    if spec.stage == "vae":
        videos, motions = data
        source = videos if position % 2 == 0 else motions
        indices = sample_indices(position // 2, batch_size, len(source), spec.seed + position % 2)
        window = min(spec.vae_window_frames, source.shape[2])
        start = torch.randint(source.shape[2] - window + 1, (), generator=_step_generator(spec.seed, position)).item()
        return {"pixels": source[indices, :, start : start + window].to(device)}
    cache: FeatureCache = data
    return cache.select(sample_indices(position, batch_size, len(cache), spec.seed), device)


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


def run_stage(spec: StageSpec, stop_after: int | None = None) -> Path:
    """Train (or resume) a stage to `spec.steps` optimizer steps and write its model directory.

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
    accumulation = spec.engine.gradient_accumulation_steps
    lineage = {"data_rev": spec.data_rev or data_revision(spec.data), "dataset_hash": dataset_hash(spec.data)}

    with StageRun(spec.stage, spec.out / "mlflow_run_id", spec.parent_run_id,
                  enabled=spec.track and engine.global_rank == 0) as run:
        run.log_params({"stage": dataclasses.asdict(spec) | {"out": str(spec.out), "data": str(spec.data)},
                        "model": getattr(trained, "cfg", None) and dataclasses.asdict(trained.cfg)})
        run.set_tags({**lineage, "stage": spec.stage, "preset": spec.preset})
        # Building the model, caching features and starting DeepSpeed happen before the run opens.
        run.log_metrics({"setup_s": time.perf_counter() - started}, step=start)
        window_start, window_steps = time.perf_counter(), 0
        for step in range(start, spec.steps):
            for micro in range(accumulation):
                position = step * accumulation + micro
                outputs = engine(_batch(spec, data, position, device), _step_generator(spec.seed, position))
                engine.backward(outputs["loss"])
                engine.step()
            window_steps += 1
            done = step + 1
            if done % spec.log_every == 0 or done == spec.steps:
                elapsed = time.perf_counter() - window_start
                samples = window_steps * accumulation * spec.engine.micro_batch_size
                metrics = {k: v.item() for k, v in outputs.items()}
                metrics.update(lr=engine.get_lr()[0], samples_per_s=samples / elapsed, **peak_memory_mb())
                run.log_metrics(metrics, step=done)
                window_start, window_steps = time.perf_counter(), 0
            if done % spec.checkpoint_every == 0 or done == spec.steps:
                checkpoints.save(engine, done, {"run_id": run.run_id})
            if stop_after is not None and done - start >= stop_after:
                return spec.out
        if engine.global_rank == 0:
            _write_outputs(spec, trained, data)
            run.log_model_directory(spec.out, MODEL_ENTRIES)
    return spec.out

