"""The training stages: vae, pim (PIM pretrain), audio (AIM audio pretrain), joint (fine-tune).

Every stage runs the same loop under DeepSpeed, checkpoints into `<out>/checkpoints`, resumes when
run again on the same --out, tracks itself in MLflow, and ends by writing its model directory at
the top of --out: a VAE directory for `vae`, a full InteractAvatar model directory for the others,
or for a LoRA joint stage (--lora-rank) a LoRA version's directory (model/lora.py).

The loop is guarded: one trainer per --out (`lock`), a resume only with the checkpoint's settings
(`resume`), only from an intact checkpoint (`checkpoint`), and a non-finite loss stops the stage
before its state is saved (`divergence`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interactavatar.config import VAE_KINDS, preset
from interactavatar.data.versioning import data_revision, dataset_hash
from interactavatar.io.files import write_text_atomic
from interactavatar.io.model_refs import ADAPTER_WEIGHTS, ResolvedModel, pinned_reference, resolve_model
from interactavatar.io.progress import Progress
from interactavatar.model import lora
from interactavatar.model.aligner import MotionToVideoAligner
from interactavatar.model.bundle import (
    ModelBundle,
    build_bundle,
    load_bundle,
    write_adapter_files,
    write_model_files,
)
from interactavatar.model.vae import CausalVAE, build_vae, load_vae
from interactavatar.model.weights import read_model_weights
from interactavatar.train import engine as ds
from interactavatar.train.checkpoint import CheckpointManager
from interactavatar.train.curriculum import Curriculum
from interactavatar.train.curve import TrainingCurve
from interactavatar.train.divergence import stop_if_not_finite
from interactavatar.train.features import FeatureCache, build_cache
from interactavatar.train.lock import exclusive_out
from interactavatar.train.objectives import (
    AudioObjective,
    JointObjective,
    PIMObjective,
    VAEObjective,
    palette_class_weights,
)
from interactavatar.train.resume import ResumeMismatch, resume_settings
from interactavatar.train.sampling import BatchLayout, StepRandomness, clip_indices
from interactavatar.train.tracking import StageRun, dataset_source, peak_memory_mb

if TYPE_CHECKING:
    from interactavatar.model.wan_vae import WanVAE

MODEL_ENTRIES = ["config.yaml", "model.safetensors", "vae", "text_encoder", "audio_encoder", "lineage.json",
                 lora.ADAPTER_RECORD, ADAPTER_WEIGHTS]
# In --out: where a warm start's init model is downloaded (one folder per process), and the
# registry version its first attempt resolved, so that a resume restarts from the same weights.
INIT_DIR, INIT_RECORD = "init", "init.json"


@dataclass(frozen=True)
class Stage:
    """What sets one training stage apart; `run_stage` runs every stage alike through these.

    name: the stage's name (`interactavatar train <name>`, the MLflow run's `stage` tag).
    description: what it trains, in one line (its command's help).
    needs: the StageSpec fields naming the model directories it starts from (vae, pim, audio).
    streams: the feature streams its cache encodes (motion, video, audio); none for the VAE, which
        trains on pixels.
    model(spec) -> what it trains and writes: the VAE, or an InteractAvatar ModelBundle.
    data(spec, trained, device) -> what its micro-batches are drawn from.
    objective(spec, trained) -> the module DeepSpeed trains: (batch, randomness) -> {"loss": [], ...}.
    batch(spec, data, layout, step, micro, randomness, device) -> this rank's micro-batch, on device.
    write(spec, trained, data) -> None: its model directory at the top of spec.out.
    """

    name: str
    description: str
    needs: tuple[str, ...]
    streams: frozenset[str]
    model: Callable[[StageSpec], Any]
    data: Callable[[StageSpec, Any, torch.device], Any]
    objective: Callable[[StageSpec, Any], torch.nn.Module]
    batch: Callable[[StageSpec, Any, BatchLayout, int, int, StepRandomness, torch.device], dict]
    write: Callable[[StageSpec, Any, Any], None]


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
    # Video steps train on random square crops of this many pixels (None: whole frames). The VAE is
    # convolutional, so what it learns on crops holds on whole frames, at a fraction of the cost
    # (demo: 88 px crops of its 176 px videos, a quarter of the pixels; the VAE stage took 2.4x as
    # long at 176 px whole frames as at the 128 px before).
    vae_video_crop: int | None = None
    # The VAE stage's architecture, one of VAE_KINDS: "causal" (ours) or "wan" (diffusers'
    # AutoencoderKLWan at the preset's sizes, VAEConfig.as_kind); None: the preset's own.
    vae_kind: str | None = None
    # Warm start: the model to start from (a model directory, an s3:// URI, or models:/NAME@ALIAS
    # or models:/NAME/VERSION). Its weights, VAE and frozen encoders replace the stage's inputs
    # (vae, pim, audio), and the model it writes names it as its parent (lineage.json).
    init: str | None = None
    # LoRA (joint stage only): adapters of this rank on both streams' attention and FFN, trained
    # with the aligner and the norms on the frozen init model, which must be a registry version;
    # the stage writes a LoRA version's directory (model/lora.py). alpha None: the rank.
    lora_rank: int | None = None
    lora_alpha: float | None = None
    parent_run_id: str | None = None
    data_rev: str | None = None
    # Where the data came from when --data is a copy outside its git checkout (a pipeline task's
    # fetched dataset): the DVC repository and the dataset's path in it, for the run's dataset input.
    data_repo: str | None = None
    data_path: str | None = None
    track: bool = True

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"train: unknown stage {self.stage!r}; choose one of {tuple(STAGES)}")
        self._check_lora()
        needs = STAGES[self.stage].needs
        if self.init is not None:
            if self.stage == "vae":
                raise ValueError("train vae: --init: a warm start takes its VAE from the init model; "
                                 "there is no VAE to train")
            given = [f"--{name}" for name in needs if getattr(self, name) is not None]
            if given:
                raise ValueError(f"train {self.stage}: --init replaces {', '.join(given)}; give one or the other")
        for name in needs if self.init is None else ():
            if getattr(self, name) is None:
                raise ValueError(f"train {self.stage}: --{name} (the {name} stage's output directory) is required")
        if self.steps < 1 or self.checkpoint_every < 1:
            raise ValueError("train: --steps and --checkpoint-every must be at least 1")
        if self.vae_kind is not None and self.vae_kind not in VAE_KINDS:
            raise ValueError(f"train vae: --vae-kind {self.vae_kind!r}, expected one of {VAE_KINDS}")
        if self.vae_video_crop is not None:
            step = preset(self.preset).vae.spatial_compression
            if self.vae_video_crop < step or self.vae_video_crop % step:
                raise ValueError(f"train vae: --video-crop {self.vae_video_crop} must be a multiple of the VAE's "
                                 f"spatial compression ({step})")
        if self.vae_motion_steps < 1:
            raise ValueError(f"train vae: --motion-steps {self.vae_motion_steps} must be at least 1")

    def _check_lora(self) -> None:
        if self.lora_rank is None:
            if self.lora_alpha is not None:
                raise ValueError(f"train {self.stage}: --lora-alpha without --lora-rank")
            return
        where = f"train {self.stage}: --lora-rank"
        if self.stage != "joint":
            raise ValueError(f"{where}: only the joint stage trains LoRA adapters")
        if not self.init:
            raise ValueError(f"{where} needs --init models:/NAME@ALIAS or models:/NAME/VERSION: an adapter is "
                             "stored against its base, which must be a registry version")
        if not self.init.startswith("models:/"):
            raise ValueError(f"{where}: --init {self.init} can change after training (a directory or URI); an "
                             "adapter's base must be a registry version (models:/NAME@ALIAS or models:/NAME/VERSION): "
                             "register the model first")
        try:
            self.lora_config()
        except ValueError as err:
            raise ValueError(f"train {self.stage}: --lora-rank {self.lora_rank}, --lora-alpha {self.lora_alpha}: "
                             f"{err}") from err

    def lora_config(self) -> lora.LoRAConfig:
        """The LoRA stage's adapter settings (call only when lora_rank is set)."""
        return lora.LoRAConfig(self.lora_rank, self.lora_alpha)


def _clip_dataset(spec: StageSpec, cfg):
    from interactavatar.data.dataset import ClipDataset

    return ClipDataset(spec.data, cfg, split=spec.split)


def _prepare(spec: StageSpec, device: torch.device):
    """(objective module, trained model: the VAE or a bundle, the data its micro-batches come from)."""
    stage = STAGES[spec.stage]
    # Model, data, objective, always in this order: each may draw from the global RNG run_stage
    # seeded, so the order fixes the initial weights (and resumes reproduce them).
    trained = _warm_start(spec) if spec.init else stage.model(spec)
    data = stage.data(spec, trained, device)
    return stage.objective(spec, trained), trained, data


def _micro_batch(spec: StageSpec, data, layout: BatchLayout, step: int, micro: int,
                 device: torch.device) -> tuple[dict, StepRandomness]:
    """This rank's slice of micro-batch `micro` of optimizer step `step`, and its random draws."""
    randomness = StepRandomness.keyed(spec.seed, step, layout.samples(step, micro))
    return STAGES[spec.stage].batch(spec, data, layout, step, micro, randomness, device), randomness


def _write_outputs(spec: StageSpec, trained, data) -> None:
    """The final model directory at the top of --out, each file replaced atomically."""
    STAGES[spec.stage].write(spec, trained, data)


# The VAE stage: trains on the clips' pixels, in memory.

def _new_vae(spec: StageSpec) -> CausalVAE | WanVAE:
    """The preset's VAE, in the architecture `spec.vae_kind` names (None: the preset's own)."""
    cfg = preset(spec.preset).vae
    return build_vae(cfg.as_kind(spec.vae_kind or cfg.kind))


def _pixels(spec: StageSpec, vae: CausalVAE | WanVAE, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(videos [N, 3, F, H, W], motion videos [N, 3, F, Hm, Wm], their palette weights [N, 1, F, Hm, Wm]).

    Videos and motion videos differ in size: two tensors, and each step trains on one kind.
    """
    dataset = _clip_dataset(spec, preset(spec.preset))
    # One clip at a time: only its two videos stay in memory.
    pairs = [(item["video"], item["motion"]) for item in (dataset[i] for i in range(len(dataset)))]
    videos, motions = (torch.stack(kind) for kind in zip(*pairs, strict=True))
    return videos, motions, palette_class_weights(motions)


def _vae_objective(spec: StageSpec, vae: CausalVAE | WanVAE) -> VAEObjective:
    return VAEObjective(vae)


def _pixel_windows(spec: StageSpec, pixels, layout: BatchLayout, step: int, micro: int,
                   randomness: StepRandomness, device: torch.device) -> dict[str, torch.Tensor]:
    """{"pixels": [B, 3, window, H, W]} of one kind, and for motion videos their "weights" [B, 1, window, H, W].

    A whole step takes one kind (`vae_step_kind`), each kind in its own epoch order, and each
    sample a window of `spec.vae_window_frames` at a start it draws from its own generator; a
    video sample also a square crop of `spec.vae_video_crop` pixels at a corner it draws.
    """
    videos, motions, motion_weights = pixels
    motion, kind_step = vae_step_kind(step, spec.vae_motion_steps)
    source = motions if motion else videos
    clips = clip_indices(layout.samples(kind_step, micro), len(source), spec.seed + motion)
    window = min(spec.vae_window_frames or source.shape[2], source.shape[2])
    last_start = source.shape[2] - window
    starts = randomness.each(lambda generator: torch.randint(last_start + 1, (1,), generator=generator))
    windows = [(clip, slice(start, start + window)) for clip, start in zip(clips, starts, strict=True)]
    batch = {"pixels": torch.stack([source[clip, :, frames] for clip, frames in windows])}
    crop, (height, width) = spec.vae_video_crop, source.shape[-2:]
    if not motion and crop is not None and crop < min(height, width):
        corners = randomness.each(lambda generator: torch.stack([
            torch.randint(height - crop + 1, (1,), generator=generator),
            torch.randint(width - crop + 1, (1,), generator=generator)], dim=1))
        batch["pixels"] = torch.stack([pixels[:, :, top: top + crop, left: left + crop]
                                       for pixels, (top, left) in zip(batch["pixels"], corners.tolist(), strict=True)])
    if motion:
        batch["weights"] = torch.stack([motion_weights[clip, :, frames] for clip, frames in windows])
    return {key: value.to(device) for key, value in batch.items()}


def vae_step_kind(step: int, motion_steps: int) -> tuple[bool, int]:
    """(whether VAE-stage step `step` trains on motion videos, its index among that kind's steps):
    one video step, then `motion_steps` motion-video steps, over and over."""
    cycle, phase = divmod(step, 1 + motion_steps)
    return (False, cycle) if phase == 0 else (True, cycle * motion_steps + phase - 1)


def _write_vae(spec: StageSpec, vae: CausalVAE | WanVAE, pixels) -> None:
    """A VAE directory, its latent scale measured on the training videos."""
    _calibrate_latent_scale(vae, videos=pixels[0])
    vae.save_pretrained(spec.out)


@torch.no_grad()
def _calibrate_latent_scale(vae: CausalVAE | WanVAE, videos: torch.Tensor) -> None:
    """Store the latents' mean and std so that diffusion sees unit-scale latents (as Wan's VAE does).

    videos: the stage's training videos [N, 3, F, H, W], already in memory; the first 16 suffice.
    """
    vae.cfg.latent_mean, vae.cfg.latent_std = 0.0, 1.0
    latents = vae.eval().encode(videos[:16].to(next(vae.parameters()).device))
    vae.cfg.latent_mean, vae.cfg.latent_std = latents.mean().item(), max(latents.std().item(), 1e-3)


# The InteractAvatar stages: train on features encoded once, up front, by the frozen encoders.

def _new_model(spec: StageSpec) -> ModelBundle:
    """A freshly initialised model, keyed by the seed alone, on the vae stage's VAE."""
    cfg = dataclasses.replace(preset(spec.preset), injection=spec.injection)
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        bundle = build_bundle(cfg, seed=spec.seed)
    bundle.vae = load_vae(spec.vae)
    bundle.cfg = dataclasses.replace(bundle.cfg, vae=bundle.vae.cfg)
    bundle.model.set_gradient_checkpointing(spec.gradient_checkpointing)
    return bundle


def _pretrained_model(spec: StageSpec) -> ModelBundle:
    """The audio stage's model (AIM, encoders, VAE) with the pim stage's PIM and a new aligner."""
    bundle = load_bundle(spec.audio)
    pim_weights = read_model_weights(spec.pim)
    bundle.model.pim.load_state_dict({k[4:]: v for k, v in pim_weights.items() if k.startswith("pim.")})
    # A fresh zero-initialised aligner: joint training starts from AIM's audio-pretrained behaviour.
    bundle.cfg = dataclasses.replace(bundle.cfg, injection=spec.injection)
    bundle.model.aligner = MotionToVideoAligner(
        bundle.cfg.pim.dim, bundle.cfg.aim.dim, bundle.cfg.aim.num_layers, spec.injection
    )
    bundle.model.set_gradient_checkpointing(spec.gradient_checkpointing)
    return bundle


def _warm_start(spec: StageSpec) -> ModelBundle:
    """The init model, whole (both streams, the aligner, the VAE and encoders), to train further;
    what it writes names the init model as its parent."""
    resolved = _resolve_init(spec)
    bundle = load_bundle(resolved.path)
    if bundle.cfg.injection != spec.injection:
        raise ValueError(f"train {spec.stage}: --injection {spec.injection}, but the init model "
                         f"{spec.init} was trained with {bundle.cfg.injection}")
    bundle.lineage = resolved.as_parent()
    bundle.model.set_gradient_checkpointing(spec.gradient_checkpointing)
    if spec.lora_rank:
        # Adapters before DeepSpeed sees the module: its checkpoints hold them like any weight.
        # Their random half is keyed by the seed alone, as a fresh model is.
        with torch.random.fork_rng():
            torch.manual_seed(spec.seed)
            lora.inject(bundle.model, spec.lora_config())
    return bundle


def _resolve_init(spec: StageSpec) -> ResolvedModel:
    """`spec.init` made local, in --out. An alias is resolved once per --out: a resumed stage takes
    the version its first attempt got (recorded in init.json), even if the alias has moved since."""
    record = spec.out / INIT_RECORD
    pinned = json.loads(record.read_text()) if record.is_file() else {}
    if pinned.get("reference") != spec.init:
        pinned = {}
    resolved = resolve_model(pinned.get("pinned", spec.init), _init_download(spec))
    resolved = ResolvedModel(resolved.path, spec.init, resolved.version)
    if not pinned and os.environ.get("RANK", "0") == "0":
        spec.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(record, json.dumps({"reference": spec.init, "pinned": resolved.pinned,
                                              "version": resolved.version}))
    return resolved


def _init_download(spec: StageSpec) -> Path:
    """This process's folder for the init model's files (ranks download apart, never into one folder)."""
    return spec.out / INIT_DIR / f"rank{os.environ.get('RANK', '0')}"


def _feature_cache(spec: StageSpec, bundle: ModelBundle, device: torch.device) -> FeatureCache:
    """Every clip's features for the streams the stage trains."""
    return build_cache(_clip_dataset(spec, bundle.cfg), bundle, STAGES[spec.stage].streams, device)


def _pim_objective(spec: StageSpec, bundle: ModelBundle) -> PIMObjective:
    return PIMObjective(bundle.model, spec.curriculum, bundle.cfg.sampler.shift)


def _audio_objective(spec: StageSpec, bundle: ModelBundle) -> AudioObjective:
    return AudioObjective(bundle.model, bundle.cfg.sampler.shift)


def _joint_objective(spec: StageSpec, bundle: ModelBundle) -> JointObjective:
    return JointObjective(bundle.model, bundle.cfg.sampler.shift)


def _cached_features(spec: StageSpec, cache: FeatureCache, layout: BatchLayout, step: int, micro: int,
                     randomness: StepRandomness, device: torch.device) -> dict[str, torch.Tensor]:
    """The cached features of the micro-batch's clips ([B, ...] each, FeatureCache's shapes)."""
    return cache.select(clip_indices(layout.samples(step, micro), len(cache), spec.seed), device)


def _write_model(spec: StageSpec, bundle: ModelBundle, cache: FeatureCache) -> None:
    """A full model directory (weights, config, VAE and encoders), or a LoRA stage's adapter
    directory, its base the init model's pinned registry version."""
    if spec.lora_rank:
        base = pinned_reference(bundle.lineage.parent, bundle.lineage.parent_version)
        write_adapter_files(bundle, spec.lora_config(), base, spec.out)
    else:
        write_model_files(bundle, spec.out)


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("vae", "the shared VAE on videos and motion videos", needs=(), streams=frozenset(),
          model=_new_vae, data=_pixels, objective=_vae_objective, batch=_pixel_windows, write=_write_vae),
    Stage("pim", "PIM pretrain: detection / continuation / generation curriculum", needs=("vae",),
          streams=frozenset({"motion"}), model=_new_model, data=_feature_cache, objective=_pim_objective,
          batch=_cached_features, write=_write_model),
    Stage("audio", "AIM audio pretrain: audio and text, no motion", needs=("vae",),
          streams=frozenset({"video", "audio"}), model=_new_model, data=_feature_cache, objective=_audio_objective,
          batch=_cached_features, write=_write_model),
    Stage("joint", "joint fine-tune of both streams and the aligner", needs=("vae", "pim", "audio"),
          streams=frozenset({"video", "motion", "audio"}), model=_pretrained_model, data=_feature_cache,
          objective=_joint_objective, batch=_cached_features, write=_write_model),
)}


def parameter_counts(module: torch.nn.Module) -> dict[str, int]:
    """{"trainable": ..., "total": ...} parameters of the module DeepSpeed trains (a LoRA stage's
    total counts its adapters too)."""
    parameters = list(module.parameters())
    return {"trainable": sum(p.numel() for p in parameters if p.requires_grad),
            "total": sum(p.numel() for p in parameters)}


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
    Each node's first process holds --out's lock throughout (a second trainer is refused).
    """
    first_on_node = os.environ.get("LOCAL_RANK", "0") == "0"
    with exclusive_out(spec.out) if first_on_node else contextlib.nullcontext():
        return _train(spec, stop_after)


def _train(spec: StageSpec, stop_after: int | None) -> Path:
    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    device = ds.device()
    objective, trained, data = _prepare(spec, device)
    engine = ds.create_engine(objective, spec.engine)
    checkpoints = CheckpointManager(spec.out / "checkpoints", resume_settings(spec, engine.world_size))
    state = checkpoints.load(engine)
    start = state["step"] if state else 0
    if start > spec.steps:
        raise ResumeMismatch(f"train {spec.stage}: --steps {spec.steps} is below the step of the checkpoint in "
                             f"{checkpoints.directory} ({start}): the model would hold more steps than asked for")
    # Every process is a data-parallel replica: there is no tensor or pipeline parallelism.
    layout = BatchLayout(spec.engine.micro_batch_size, spec.engine.gradient_accumulation_steps,
                         ranks=engine.world_size, rank=engine.global_rank)
    is_main = engine.global_rank == 0

    with StageRun(spec.stage, spec.out / "mlflow_run_id", spec.parent_run_id, enabled=spec.track and is_main,
                  checkpoint_run_id=state and state.get("run_id")) as run:
        if run.enabled:
            run.log_params({"stage": dataclasses.asdict(spec) | {"out": str(spec.out), "data": str(spec.data)},
                            "model": getattr(trained, "cfg", None) and dataclasses.asdict(trained.cfg),
                            "global_batch": layout.global_batch, "processes": layout.ranks,
                            "parameters": parameter_counts(objective),
                            **({"lora": dataclasses.asdict(spec.lora_config())} if spec.lora_rank else {})})
            # Hashing reads the whole dataset: only the rank that records it does.
            lineage, content_hash = getattr(trained, "lineage", None), dataset_hash(spec.data)
            run.set_tags({"data_rev": spec.data_rev or data_revision(spec.data),
                          "dataset_hash": content_hash, "stage": spec.stage, "preset": spec.preset,
                          **({f"lineage.{k}": v for k, v in dataclasses.asdict(lineage).items()} if lineage else {})})
            run.log_dataset(dataset_source(spec.data, spec.data_rev, spec.data_repo, spec.data_path), content_hash)
        # Building the model, caching features and starting DeepSpeed happen before the run opens.
        run.log_metrics({"setup_s": time.perf_counter() - started}, step=start)
        curve = TrainingCurve(spec.out, start, enabled=is_main)  # dvc.yaml's training-loss plot
        window_start, window_steps = time.perf_counter(), 0
        steps = Progress(f"train {spec.stage}", spec.steps, initial=start, enabled=is_main)
        for step in steps.over(range(start, spec.steps)):
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
            stop_if_not_finite(spec.stage, engine, sums["loss"], done, checkpoints.resume_point)
            if done % spec.log_every == 0 or done == spec.steps:
                metrics = _global_batch_mean(sums, layout)
                elapsed = time.perf_counter() - window_start
                metrics.update(lr=engine.get_lr()[0], samples_per_s=window_steps * layout.global_batch / elapsed,
                               **peak_memory_mb())
                run.log_metrics(metrics, step=done)
                curve.append(done, metrics)
                steps.note(loss=metrics["loss"])
                window_start, window_steps = time.perf_counter(), 0
            if done % spec.checkpoint_every == 0 or done == spec.steps:
                checkpoints.save(engine, done, {"run_id": run.run_id})
            if stop_after is not None and done - start >= stop_after:
                return spec.out
        if is_main:
            _write_outputs(spec, trained, data)
            run.log_model_directory(spec.out, MODEL_ENTRIES)
    # The init model's download is needed only to resume.
    shutil.rmtree(_init_download(spec), ignore_errors=True)
    return spec.out
