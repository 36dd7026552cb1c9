"""The public release's DiT checkpoint in our terms: its model arguments as a config, and its state
dict (one dict, no prefix: AIM unprefixed, PIM under `motion_*`, the aligner as
`zero_motion_proj_blocks.{i}`, audio attention inside AIM's blocks, the audio projection as
`audio_proj`) renamed to our parameter names.

The map is strict: every release key must map onto one of ours with the same number of elements,
and every one of ours must be filled, else a ValueError names the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open

from interactavatar.config import InteractAvatarConfig, StreamConfig, VAEConfig
from interactavatar.model.interact_avatar import InteractAvatar
from interactavatar.model.weights import SAFETENSORS_DTYPES, LazyTensor, load_checkpoint

# The release's 5B model arguments (WanModel's defaults); its audio projection's hard-coded widths.
RELEASE_5B = {"patch_size": [1, 2, 2], "text_len": 512, "in_dim": 48, "dim": 3072, "ffn_dim": 14336,
              "freq_dim": 256, "text_dim": 4096, "out_dim": 48, "num_heads": 24, "num_layers": 30, "eps": 1e-6}
RELEASE_5B_AUDIO = {"seq_len": 5, "seq_len_vf": 8, "blocks": 12, "channels": 768, "intermediate_dim": 512,
                    "output_dim": 768, "context_tokens": 32}

# The unconditional prompt of the release's test script (test_wanx_tia2mv_obj_back.py).
RELEASE_NEGATIVE_PROMPT = (
    "bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy "
    "background, three legs, many people in the background, walking backwards")
# The block the release's unconditional pass skips while t > 800 (bad-CFG).
RELEASE_SKIP_BLOCK, RELEASE_SKIP_ABOVE = 11, 800.0

# release name -> our name, for the parts whose names differ (regular expressions over whole keys).
_RENAMES = [
    (r"motion_(patch_embedding|text_embedding|time_embedding|time_projection)\.(.+)", r"pim.\1.\2"),
    (r"motion_blocks\.(\d+)\.(.+)", r"pim.blocks.\1.\2"),
    (r"motion_head\.head\.(.+)", r"pim.head.proj.\1"),
    (r"motion_head\.modulation", r"pim.head.modulation"),
    (r"blocks\.(\d+)\.audio_cross_attn\.(q_linear|kv_linear|proj)\.(.+)", r"aim.audio_blocks.\1.\2.\3"),
    (r"blocks\.(\d+)\.norm_audio\.(.+)", r"aim.audio_blocks.\1.norm.\2"),
    (r"blocks\.(\d+)\.(.+)", r"aim.blocks.\1.\2"),
    (r"head\.head\.(.+)", r"aim.head.proj.\1"),
    (r"head\.modulation", r"aim.head.modulation"),
    (r"(patch_embedding|text_embedding|time_embedding|time_projection)\.(.+)", r"aim.\1.\2"),
    (r"audio_proj\.proj1\.(.+)", r"aim.audio_projection.first.\1"),
    (r"audio_proj\.proj1_vf\.(.+)", r"aim.audio_projection.later.\1"),
    (r"audio_proj\.proj2\.(.+)", r"aim.audio_projection.mid.\1"),
    (r"audio_proj\.proj3\.(.+)", r"aim.audio_projection.out.\1"),
    (r"audio_proj\.norm\.(.+)", r"aim.audio_projection.norm.\1"),
    (r"zero_motion_proj_blocks\.(\d+)\.weight", r"aligner.projections.\1.weight"),
]


def our_key(release_key: str) -> str | None:
    """Our parameter name for a release key, or None for a key that is not the release's."""
    for pattern, replacement in _RENAMES:
        if re.fullmatch(pattern, release_key):
            return re.sub(pattern, replacement, release_key)
    return None


def config_from_release(model_kwargs: Mapping, audio_kwargs: Mapping | None = None, *,
                        base: InteractAvatarConfig | None = None, vae: VAEConfig | None = None
                        ) -> InteractAvatarConfig:
    """Our config for the release's `WanModel` arguments and its `AudioProjModel` widths (the 5B
    values where one is not given); sizes, encoders and sampler from `base` (else the `paper`
    preset); the VAE `vae` (else base's, at the transformer's latent width)."""
    from interactavatar.config import preset

    args, audio = {**RELEASE_5B, **model_kwargs}, {**RELEASE_5B_AUDIO, **(audio_kwargs or {})}
    if args["in_dim"] != args["out_dim"]:
        raise ValueError(f"release config: in_dim {args['in_dim']} != out_dim {args['out_dim']} (one latent space)")
    base = base or preset("paper")
    stream = StreamConfig(dim=args["dim"], num_layers=args["num_layers"], num_heads=args["num_heads"],
                          ffn_dim=args["ffn_dim"], patch_size=tuple(args["patch_size"]), freq_dim=args["freq_dim"],
                          eps=args["eps"])
    # A later latent frame's audio window spans its frames plus the half-windows beside them.
    compression = audio["seq_len_vf"] - audio["seq_len"] + 1
    vae = vae or dataclasses.replace(base.vae, latent_channels=args["in_dim"])
    if vae.latent_channels != args["in_dim"]:
        raise ValueError(f"release config: the VAE has {vae.latent_channels} latent channels, the transformer "
                         f"takes {args['in_dim']}")
    if compression != vae.temporal_compression:
        raise ValueError(f"release config: the audio windows imply {compression}x temporal compression, "
                         f"the VAE has {vae.temporal_compression}x")
    return dataclasses.replace(
        base, pim=stream, aim=dataclasses.replace(stream),
        vae=vae,
        text=dataclasses.replace(base.text, dim=args["text_dim"], max_tokens=args["text_len"]),
        audio=dataclasses.replace(base.audio, window=audio["seq_len"], num_layers=audio["blocks"],
                                  feature_dim=audio["channels"], projection_dim=audio["intermediate_dim"],
                                  token_width=audio["output_dim"], tokens_per_frame=audio["context_tokens"]),
    )


def conversion_plan(release_shapes: Mapping[str, tuple[int, ...]], our_shapes: Mapping[str, tuple[int, ...]],
                    source: str = "checkpoint") -> dict[str, str]:
    """release key -> our key, checked: every release key maps onto one of ours with as many
    elements, and every one of ours is filled. A ValueError names `source` and the key otherwise."""
    plan: dict[str, str] = {}
    for key, shape in release_shapes.items():
        name = our_key(key)
        if name is None or name not in our_shapes:
            raise ValueError(f"{source}: {key!r} is not a key of the InteractAvatar release checkpoint "
                             f"(or of this config: {name!r})")
        if math.prod(shape) != math.prod(our_shapes[name]):
            raise ValueError(f"{source}: {key!r} has shape {list(shape)}, expected {list(our_shapes[name])} "
                             f"(as {name})")
        plan[key] = name
    missing = sorted(set(our_shapes) - set(plan.values()))
    if missing:
        raise ValueError(f"{source}: {len(missing)} tensor(s) of the model are not in the checkpoint, "
                         f"e.g. {missing[:3]}")
    return plan


def state_dict_from_release(release: Mapping[str, torch.Tensor], ours: Mapping[str, torch.Tensor],
                            source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The release's tensors under our names, shaped as `ours` (our model's state dict, or meta
    tensors of its shapes), checked as `conversion_plan` checks them."""
    our_shapes = {name: tuple(tensor.shape) for name, tensor in ours.items()}
    plan = conversion_plan({key: tuple(tensor.shape) for key, tensor in release.items()}, our_shapes, source)
    return {plan[key]: tensor.reshape(our_shapes[plan[key]]) for key, tensor in release.items()}


# The release's transformer folder: one safetensors file, or shards and their index.
TRANSFORMER_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMER_INDEX = "diffusion_pytorch_model.safetensors.index.json"


class ReleaseTensor(NamedTuple):
    """Where one tensor of the release's transformer lies, and what it is (from the file's header)."""

    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]


def release_tensors(folder: str | Path) -> dict[str, ReleaseTensor]:
    """Each tensor of the release's transformer folder, by key: its file, dtype and shape, read
    from each file's header once (no tensor is read)."""
    folder = Path(folder)
    if (folder / TRANSFORMER_WEIGHTS).is_file():
        files = [folder / TRANSFORMER_WEIGHTS]
    elif (folder / TRANSFORMER_INDEX).is_file():
        files = sorted({folder / shard for shard in json.loads((folder / TRANSFORMER_INDEX).read_text())["weight_map"].values()})
    else:
        raise FileNotFoundError(f"{folder}: neither {TRANSFORMER_WEIGHTS} nor {TRANSFORMER_INDEX} (the release's "
                                "transformer folder)")
    dtypes = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}
    located: dict[str, ReleaseTensor] = {}
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard listed in {TRANSFORMER_INDEX} not found")
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    piece = handle.get_slice(key)
                    located[key] = ReleaseTensor(path, dtypes[piece.get_dtype()], tuple(piece.get_shape()))
        except Exception as err:  # safetensors raises its own error types for a foreign file
            raise ValueError(f"{path}: not a safetensors file ({err})") from err
    return located


def transformer_tensors(folder: str | Path, cfg: InteractAvatarConfig) -> list[LazyTensor]:
    """The release transformer's tensors under our names, in our order, each read from its file
    only when it is written: the whole checkpoint is never in memory."""
    located = release_tensors(folder)
    with torch.device("meta"):
        ours = {name: tuple(tensor.shape) for name, tensor in InteractAvatar(cfg).state_dict().items()}
    plan = conversion_plan({key: source.shape for key, source in located.items()}, ours, str(folder))
    by_name = {name: key for key, name in plan.items()}

    def reader(key: str, shape: tuple[int, ...]):
        def read() -> torch.Tensor:
            with safe_open(str(located[key].path), framework="pt") as handle:
                return handle.get_tensor(key).reshape(shape)
        return read

    return [LazyTensor(name, located[by_name[name]].dtype, shape, reader(by_name[name], shape))
            for name, shape in ours.items()]


def umt5_sizes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The release T5Encoder's sizes, read from its weights' shapes (so any umT5 checkpoint of its
    layout imports without a config)."""
    layers = 1 + max(int(key.split(".")[1]) for key in state_dict if key.startswith("blocks."))
    vocab, dim = state_dict["token_embedding.weight"].shape
    num_buckets, num_heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
    return {"vocab": vocab, "dim": dim, "dim_attn": state_dict["blocks.0.attn.q.weight"].shape[0],
            "dim_ffn": state_dict["blocks.0.ffn.fc1.weight"].shape[0], "num_heads": num_heads,
            "num_layers": layers, "num_buckets": num_buckets}


def import_release(transformer: str | Path, vae: str | Path, umt5: str | Path, tokenizer: str | Path,
                   wav2vec2: str | Path, out: str | Path, release_config: Mapping | None = None,
                   audio_config: Mapping | None = None, vae_config: Mapping | None = None,
                   sizes: Mapping | None = None, max_shard_bytes: int = 2 << 30) -> Path:
    """The release's files -> one of our model directories, written atomically:

        transformer  folder with diffusion_pytorch_model.safetensors (or its index and shards)
        vae          Wan2.2_VAE.pth
        umt5         the umT5 encoder .pth, with `tokenizer` its tokenizer folder
        wav2vec2     the wav2vec2-base folder (transformers' layout)

    `release_config`: the release's WanModel arguments (the 5B values where absent);
    `audio_config`: its AudioProjModel widths; `vae_config`: the VAE's `kwargs` (WanVAE_ arguments)
    and per-channel `latent_mean` / `latent_std` (the release's Wan2.2 values where absent);
    `sizes`: video_size, motion_size, num_frames, size_rule (the `paper` preset's where absent). The
    transformer is streamed tensor by tensor into shards of at most `max_shard_bytes`, in its own dtype.
    """
    import shutil

    from transformers import AutoTokenizer, UMT5EncoderModel

    from interactavatar.config import TextConfig, preset
    from interactavatar.io.files import atomic_directory
    from interactavatar.io.model_refs import Lineage, write_lineage
    from interactavatar.model.text import umt5_config_from_release, umt5_state_dict_from_release
    from interactavatar.model.wan_vae import WanVAE
    from interactavatar.model.weights import write_sharded_weights

    paths = {name: Path(value) for name, value in
             (("transformer", transformer), ("tokenizer", tokenizer), ("wav2vec2", wav2vec2))}
    for name, folder in paths.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: the release's {name} folder not found")
    base = preset("paper")
    unknown = set(sizes or {}) - {"video_size", "motion_size", "num_frames", "size_rule"}
    if unknown:
        raise ValueError(f"release config: unknown size(s) {sorted(unknown)}")
    base = dataclasses.replace(base, **{k: tuple(v) if isinstance(v, list) else v for k, v in (sizes or {}).items()})
    vae_config = dict(vae_config or {})
    wan_vae = WanVAE.from_release_checkpoint(vae, vae_config.pop("kwargs", None), **vae_config)
    try:
        cfg = config_from_release(release_config or {}, audio_config, base=base, vae=wan_vae.cfg)
    except ValueError as err:
        raise ValueError(f"{vae}: {err}") from err
    text_weights = load_checkpoint(umt5, "umT5 encoder checkpoint")
    sizes = umt5_sizes(text_weights)
    if sizes["dim"] != cfg.text.dim:
        raise ValueError(f"{umt5}: umT5 width {sizes['dim']}, the transformer's text_dim is {cfg.text.dim}")
    speech = json.loads((paths["wav2vec2"] / "config.json").read_text()) if (paths["wav2vec2"] / "config.json").is_file() else {}
    if (speech.get("num_hidden_layers"), speech.get("hidden_size")) != (cfg.audio.num_layers, cfg.audio.feature_dim):
        raise ValueError(f"{paths['wav2vec2']}/config.json: {speech.get('num_hidden_layers')} layers of "
                         f"{speech.get('hidden_size')}, the audio projection takes {cfg.audio.num_layers} of "
                         f"{cfg.audio.feature_dim}")
    # The release's sampler: its guidance, negative prompt and bad-CFG block (when the depth has it).
    sampler = dataclasses.replace(
        cfg.sampler, guidance="release", negative_prompt=RELEASE_NEGATIVE_PROMPT, text_scale=5.0,
        skip_block=RELEASE_SKIP_BLOCK if cfg.aim.num_layers > RELEASE_SKIP_BLOCK else None,
        skip_above=RELEASE_SKIP_ABOVE)
    cfg = dataclasses.replace(
        cfg, sampler=sampler, text=TextConfig(kind="umt5", dim=sizes["dim"], max_tokens=cfg.text.max_tokens),
        audio=dataclasses.replace(cfg.audio, kind="wav2vec2", path=None))
    with atomic_directory(out) as staging:
        write_sharded_weights(staging, transformer_tensors(paths["transformer"], cfg), max_shard_bytes)
        wan_vae.save_pretrained(staging / "vae")
        del wan_vae
        with torch.device("meta"):  # the weights are assigned, not copied: umT5-XXL is 11 GB in bf16
            encoder = UMT5EncoderModel(umt5_config_from_release(sizes))
        encoder.load_state_dict(umt5_state_dict_from_release(text_weights, sizes["num_layers"], umt5), strict=True,
                                assign=True)
        encoder.save_pretrained(str(staging / "text_encoder"))
        AutoTokenizer.from_pretrained(str(paths["tokenizer"])).save_pretrained(str(staging / "text_encoder"))
        del encoder, text_weights
        shutil.copytree(paths["wav2vec2"], staging / "audio_encoder")
        write_lineage(staging, Lineage("release"))
        cfg.save(staging / "config.yaml")
    return Path(out)
