"""LoRA fine-tuning with PEFT: low-rank adapters on both streams, and merging them back at load.

A LoRA fine-tune trains, on a frozen base model, a pair of low-rank matrices beside each targeted
Linear (W x + (alpha / rank) B A x: A [rank, in], B [out, rank], B starting at zero so that training
starts from the base exactly), plus, whole, the parts that are small and specific to the task: the
aligner (PIM -> AIM injection, the joint stage's own part) and every norm's scale. The adapter
layers are PEFT's (`inject_adapter_in_model`); we do not write our own.

Why: a fine-tune from the champion then writes megabytes instead of the whole model, trains and
stores a fraction of the optimizer state, and keeps the base exactly recoverable. What a LoRA
version holds (bundle.py writes and loads the directory):

    config.yaml           the model's config (the base's)
    adapter.json          rank, alpha, targets, and `base`: the registry version it applies to,
                          pinned (models:/NAME/VERSION), never an alias or a path, which could change
    adapter.safetensors   the adapter (PEFT's key names, `...q.lora_A.weight`) and the fully trained
                          aligner and norm weights (the model's own key names)
    lineage.json          origin "model", the base as its parent

Loading merges (`merge_adapter`): the result is a plain InteractAvatar, its state dict keyed as the
base's, so everything downstream (sampling, evaluation, serving) sees an ordinary model.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from interactavatar.io.files import atomic_path, write_text_atomic
from interactavatar.io.model_refs import ADAPTER_WEIGHTS, PINNED
from interactavatar.model.dit import RMSNorm
from interactavatar.model.interact_avatar import InteractAvatar

ADAPTER_RECORD = "adapter.json"
ADAPTER_NAME = "default"  # PEFT's name for the one adapter a model carries
# Module-name patterns (regular expressions, matched against the whole name) of the adapted Linears.
TARGETS = (
    r"(pim|aim)\.blocks\.\d+\.(self_attn|cross_attn)\.(q|k|v|o)",  # both streams' self and text attention
    r"(pim|aim)\.blocks\.\d+\.ffn\.(0|2)",  # both streams' FFN
    r"aim\.audio_blocks\.\d+\.(q_linear|kv_linear|proj)",  # AIM's audio attention
)
# Trained whole, not adapted: the aligner, and every norm with a scale (found by type, see `fully_trained`).
FULL_MODULES = ("aligner",)


@dataclass(frozen=True)
class LoRAConfig:
    """rank: the adapters' inner width R; alpha: their scale numerator (the update is alpha / R * B A),
    None: the rank (a scale of 1); targets: module-name patterns of the Linears to adapt."""

    rank: int
    alpha: float | None = None
    targets: tuple[str, ...] = field(default=TARGETS)

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"lora: rank {self.rank!r} must be a positive integer")
        object.__setattr__(self, "alpha", float(self.rank if self.alpha is None else self.alpha))
        if not self.alpha > 0:
            raise ValueError(f"lora: alpha {self.alpha!r} must be positive")
        object.__setattr__(self, "targets", tuple(self.targets))
        if not self.targets:
            raise ValueError("lora: no target modules")

    def peft(self):
        """PEFT's LoraConfig: no dropout (a step's randomness is keyed, resumes are bit-identical),
        biases frozen, B initialised to zero."""
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=0.0, bias="none",
                          target_modules="|".join(f"(?:{pattern})" for pattern in self.targets))


def fully_trained(model: nn.Module) -> list[str]:
    """The names of the parameters a LoRA fine-tune trains whole: the aligner's and every norm's."""
    names = [name for name, _ in model.named_parameters() if name.split(".", 1)[0] in FULL_MODULES]
    for prefix, module in model.named_modules():
        if isinstance(module, (nn.LayerNorm, RMSNorm)):
            names += [f"{prefix}.{name}" for name, _ in module.named_parameters(recurse=False)]
    return names


def inject(model: InteractAvatar, cfg: LoRAConfig) -> InteractAvatar:
    """Add adapters to `model` in place (A drawn from the global RNG, B zero: the forward is
    unchanged) and leave only them, the aligner and the norms trainable."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(cfg.peft(), model, adapter_name=ADAPTER_NAME)  # freezes everything else
    parameters = dict(model.named_parameters())
    for name in fully_trained(model):
        parameters[name].requires_grad_(True)
    return model


def adapted(model: nn.Module) -> list[str]:
    """The names of the modules that carry an adapter."""
    from peft.tuners.lora import LoraLayer

    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def save_adapter(model: InteractAvatar, cfg: LoRAConfig, base: str, directory: str | Path) -> None:
    """Write adapter.safetensors (the adapter, the aligner and the norms) and adapter.json into
    `directory`, each replaced atomically. base: the pinned registry version the adapter applies to."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    check_base(base, "save_adapter")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parameters = dict(model.named_parameters())
    tensors = {**get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME),
               **{name: parameters[name] for name in fully_trained(model)}}
    with atomic_path(directory / ADAPTER_WEIGHTS) as tmp:
        save_file({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}, str(tmp))
    write_text_atomic(directory / ADAPTER_RECORD, json.dumps(asdict(cfg) | {"base": base}, indent=1) + "\n")


def check_base(base: str, where: str) -> str:
    if not isinstance(base, str) or PINNED.fullmatch(base) is None:
        raise ValueError(f"{where}: base {base!r} is not a pinned registry version models:/NAME/VERSION "
                         "(an alias, a directory or an s3:// URI can change under the adapter)")
    return base


def read_adapter_record(directory: str | Path) -> tuple[LoRAConfig, str]:
    """adapter.json -> (its LoRAConfig, its base); errors name the file and the field."""
    path = Path(directory) / ADAPTER_RECORD
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected an object with rank, alpha, targets and base")
    unknown = set(record) - {"rank", "alpha", "targets", "base"}
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}")
    for name in ("rank", "targets", "base"):
        if name not in record:
            raise ValueError(f"{path}: field {name!r} missing")
    targets = record["targets"]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"{path}: field 'targets' must be a list of module-name patterns, got {targets!r}")
    for pattern in targets:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{path}: field 'targets': {pattern!r} is not a regular expression ({err})") from err
    rank, alpha = record["rank"], record.get("alpha")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{path}: field 'rank' must be a positive integer, got {rank!r}")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0):
        raise ValueError(f"{path}: field 'alpha' must be a positive number, got {alpha!r}")
    return LoRAConfig(rank, alpha, tuple(targets)), check_base(record["base"], f"{path}: field 'base'")


def merge_adapter(model: InteractAvatar, directory: str | Path) -> InteractAvatar:
    """The base `model` (plain, its weights loaded) with the adapter in `directory` merged in
    (W + alpha / R * B A, PEFT's merge) and its aligner and norms replaced: a plain InteractAvatar
    again, keyed as the base."""
    from peft import set_peft_model_state_dict
    from peft.tuners.lora import LoraModel
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg, _ = read_adapter_record(directory)
    path = directory / ADAPTER_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the adapter's weights are missing")
    tensors = load_file(str(path))
    full = {name: tensor for name, tensor in tensors.items() if ".lora_" not in name}
    expected = set(fully_trained(model))
    if set(full) != expected:
        raise ValueError(f"{path}: the aligner and norm weights do not match the model (missing "
                         f"{sorted(expected - set(full))[:3]}, unexpected {sorted(set(full) - expected)[:3]})")
    model.load_state_dict(full, strict=False)
    tuner = LoraModel(model, cfg.peft(), ADAPTER_NAME)
    if not adapted(model):
        raise ValueError(f"{directory / ADAPTER_RECORD}: field 'targets' matches no module of the model")
    lora = {name: tensor for name, tensor in tensors.items() if ".lora_" in name}
    try:
        result = set_peft_model_state_dict(model, lora, adapter_name=ADAPTER_NAME)
    except RuntimeError as err:  # a shape mismatch: another rank, or another model
        raise ValueError(f"{path}: the adapter does not fit the model and adapter.json ({err})") from err
    unexpected = [name for name in result.unexpected_keys if ".lora_" in name]
    not_loaded = [name for name in result.missing_keys if ".lora_" in name]
    if unexpected or not_loaded:
        raise ValueError(f"{path}: adapter weights do not match adapter.json's targets (missing "
                         f"{not_loaded[:3]}, unexpected {unexpected[:3]})")
    with torch.no_grad():
        merged = tuner.merge_and_unload()
    # PEFT froze the base; a loaded model trains whole (a full warm start from a LoRA version).
    return merged.requires_grad_(True)
