"""The model directory: the unit every stage passes on.

    config.yaml            InteractAvatarConfig
    model.safetensors      PIM, AIM (with audio attention and projection) and the aligner
    vae/                   config.yaml + model.safetensors of the VAE (its kind: ours, or the Wan2.2 VAE)
    text_encoder/          only for encoders not loadable by path (the tiny random one)
    audio_encoder/         likewise (wav2vec2 is random on machines without its weights)
    lineage.json           where the weights came from: scratch, the release, or a parent model

A LoRA version's directory (model/lora.py) holds config.yaml, adapter.json, adapter.safetensors and
lineage.json instead: its base, a pinned registry version, supplies everything else, and
`load_bundle` fetches it (MLFLOW_TRACKING_URI must name the registry; the download is cached),
loads it, possibly itself a LoRA version, and merges the adapter in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from interactavatar.config import InteractAvatarConfig, preset
from interactavatar.io.files import atomic_directory
from interactavatar.io.model_refs import Lineage, read_lineage, resolve_pinned, write_lineage
from interactavatar.model import lora
from interactavatar.model.audio import AudioEncoder
from interactavatar.model.interact_avatar import InteractAvatar
from interactavatar.model.text import TextEncoder
from interactavatar.model.vae import CausalVAE, build_vae, load_vae
from interactavatar.model.weights import read_model_weights, save_config, save_config_and_weights

if TYPE_CHECKING:
    from interactavatar.model.wan_vae import WanVAE


@dataclass
class ModelBundle:
    cfg: InteractAvatarConfig
    model: InteractAvatar
    vae: CausalVAE | WanVAE
    text_encoder: TextEncoder
    audio_encoder: AudioEncoder
    lineage: Lineage = field(default_factory=Lineage)

    def to(self, device: torch.device | str) -> ModelBundle:
        for part in (self.model, self.vae, self.text_encoder, self.audio_encoder):
            part.to(device)
        return self


def build_bundle(cfg: InteractAvatarConfig, seed: int = 0) -> ModelBundle:
    """A randomly initialised model (text encoder pretrained when the config names one). Random
    stand-in encoders are seeded apart from `seed`: every stage of a training run must see the
    same frozen features."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model, vae = InteractAvatar(cfg), build_vae(cfg.vae)
    return ModelBundle(
        cfg, model, vae, TextEncoder.from_config(cfg.text), AudioEncoder.from_config(cfg.audio)
    )


def write_model_files(bundle: ModelBundle, directory: str | Path) -> None:
    """Write the model's entries into `directory` (which may hold other things, such as a training
    stage's checkpoints), each replaced atomically; config.yaml goes last, so a directory with a
    config always has the weights that belong to it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").unlink(missing_ok=True)
    with atomic_directory(directory / "vae") as staging:
        bundle.vae.save_pretrained(staging)
    for kind, name, encoder in (("text", "text_encoder", bundle.text_encoder), ("audio", "audio_encoder", bundle.audio_encoder)):
        # An encoder not loadable from a path of its config (random, or imported into a model
        # directory) travels with the model.
        if getattr(bundle.cfg, kind).kind == "random" or (getattr(bundle.cfg, kind).path is None
                                                          and getattr(bundle.cfg, kind).kind != "minilm"):
            with atomic_directory(directory / name) as staging:
                encoder.save(staging)
    write_lineage(directory, bundle.lineage)
    save_config_and_weights(directory, bundle.cfg, bundle.model.state_dict())


def write_adapter_files(bundle: ModelBundle, cfg: lora.LoRAConfig, base: str, directory: str | Path) -> None:
    """Write a LoRA version's entries into `directory`: the adapter of `bundle.model` (injected by
    `lora.inject`) applied to `base` (models:/NAME/VERSION), the lineage, and config.yaml last, as
    in `write_model_files`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").unlink(missing_ok=True)
    lora.save_adapter(bundle.model, cfg, base, directory)
    write_lineage(directory, bundle.lineage)
    save_config(directory, bundle.cfg)


def save_bundle(bundle: ModelBundle, directory: str | Path) -> Path:
    """Write a whole model directory atomically (a failure leaves the old one intact)."""
    with atomic_directory(directory) as staging:
        write_model_files(bundle, staging)
    return Path(directory)


def load_bundle(directory: str | Path, device: torch.device | str = "cpu") -> ModelBundle:
    """The model in `directory`; a LoRA version comes back merged into its base (a plain model)."""
    directory = Path(directory)
    if not (directory / "config.yaml").is_file():
        raise FileNotFoundError(f"{directory}: not a model directory (config.yaml missing)")
    if (directory / lora.ADAPTER_RECORD).is_file():
        return _load_adapter_bundle(directory).to(device)
    cfg = InteractAvatarConfig.load(directory / "config.yaml")
    model = InteractAvatar(cfg)
    missing, unexpected = model.load_state_dict(read_model_weights(directory), strict=False)
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not match config.yaml (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    text_dir, audio_dir = directory / "text_encoder", directory / "audio_encoder"
    bundle = ModelBundle(
        cfg,
        model.eval(),
        load_vae(directory / "vae").eval(),
        TextEncoder.from_config(cfg.text, path=text_dir if text_dir.is_dir() else None),
        AudioEncoder.from_config(cfg.audio, path=audio_dir if audio_dir.is_dir() else None),
        read_lineage(directory),
    )
    return bundle.to(device)


def _load_adapter_bundle(directory: Path) -> ModelBundle:
    """A LoRA version: its base from the registry (cached; loaded as any model, so a base that is
    itself a LoRA version merges its own adapter first), this adapter merged in, this lineage."""
    _, base = lora.read_adapter_record(directory)
    try:
        base_dir = resolve_pinned(base).path
    except ValueError as err:
        raise ValueError(f"{directory / lora.ADAPTER_RECORD}: its base {err}") from err
    bundle = load_bundle(base_dir)
    cfg = InteractAvatarConfig.load(directory / "config.yaml")
    if cfg != bundle.cfg:
        raise ValueError(f"{directory / 'config.yaml'}: differs from the config of its base {base} (an adapter "
                         "applies to the model it was trained on)")
    bundle.model = lora.merge_adapter(bundle.model, directory).eval()
    bundle.lineage = read_lineage(directory)
    return bundle


def init_model_directory(preset_name: str, out: str | Path, seed: int = 0) -> Path:
    return save_bundle(build_bundle(preset(preset_name), seed=seed), out)
