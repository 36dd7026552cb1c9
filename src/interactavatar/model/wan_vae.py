"""The release's Wan2.2 VAE (`wan/modules/vae2_2.py`) as diffusers' `AutoencoderKLWan`, behind the
interface the rest of the package uses from `CausalVAE`.

Encode: pixel-patchify, the encoder over causal chunks of 1, 4, 4, ... frames with the feature cache
carried between them, and the posterior mean (no sampling) normalised per latent channel. Decode:
un-normalise, the decoder one latent frame at a time, clamp to [-1, 1]. Both are diffusers' own
`AutoencoderKLWan.encode` / `.decode`, which compute what the release does (fixture family `vae`).

The release's checkpoint (`Wan2.2_VAE.pth`) has the key layout of its `WanVAE_` module;
`wan_vae_state_dict_from_release` renames it to diffusers' layout, strictly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from einops import rearrange
from safetensors.torch import load_file
from torch import nn

from interactavatar.config import WAN22_LATENT_MEAN, WAN22_LATENT_STD, VAEConfig
from interactavatar.model.vae import check_pixels
from interactavatar.model.weights import load_checkpoint, load_dataclass, save_config_and_weights

# What the release's `Wan2_2_VAE` builds its `WanVAE_` with (TI2V-5B). `dec_dim` is `WanVAE_`'s own
# default: `Wan2_2_VAE` never passes one.
RELEASE_5B_KWARGS = {
    "dim": 160,
    "dec_dim": 256,
    "z_dim": 48,
    "dim_mult": (1, 2, 4, 4),
    "num_res_blocks": 2,
    "attn_scales": (),
    "temperal_downsample": (False, True, True),
    "dropout": 0.0,
}


def vae_config_from_release(kwargs: Mapping, latent_mean: Sequence[float] | torch.Tensor = WAN22_LATENT_MEAN,
                            latent_std: Sequence[float] | torch.Tensor = WAN22_LATENT_STD,
                            patch_size: int = 2) -> VAEConfig:
    """Our VAEConfig (kind "wan") for the release's `WanVAE_(**kwargs)`; a missing kwarg takes the
    release's 5B value. `latent_mean`/`latent_std`: the per-channel statistics (`Wan2_2_VAE.scale`
    holds the mean and 1/std)."""
    unknown = sorted(set(kwargs) - set(RELEASE_5B_KWARGS))
    if unknown:
        raise ValueError(f"wan vae: unknown WanVAE_ argument(s) {unknown}")
    args = {**RELEASE_5B_KWARGS, **kwargs}
    mults, temporal = tuple(args["dim_mult"]), tuple(args["temperal_downsample"])
    if len(temporal) != len(mults) - 1:
        raise ValueError(f"wan vae: temperal_downsample {list(temporal)} needs one flag per downsampling "
                         f"stage ({len(mults) - 1} for dim_mult {list(mults)})")
    if args["dropout"]:
        raise ValueError(f"wan vae: dropout={args['dropout']}; the release's VAE has none")
    # attn_scales is read by neither the release's residual (Wan2.2) blocks nor diffusers': ignored.

    def channels(values, name):
        values = torch.as_tensor(values, dtype=torch.float64).flatten().tolist()
        if len(values) != args["z_dim"]:
            raise ValueError(f"wan vae: {name} has {len(values)} values for z_dim={args['z_dim']}")
        return tuple(values)

    return VAEConfig(
        kind="wan",
        latent_channels=args["z_dim"],
        base_channels=args["dim"],
        decoder_base_channels=args["dec_dim"],
        channel_multipliers=mults,
        temporal_downsample_levels=tuple(i for i, flag in enumerate(temporal) if flag),
        patch_size=patch_size,
        num_res_blocks=args["num_res_blocks"],
        latent_mean=channels(latent_mean, "latent_mean"),
        latent_std=channels(latent_std, "latent_std"),
    )


def _per_channel(value: float | Sequence[float], channels: int) -> list[float]:
    return [float(v) for v in value] if isinstance(value, (tuple, list)) else [float(value)] * channels


def autoencoder_kwargs(cfg: VAEConfig) -> dict:
    """The `AutoencoderKLWan(**kwargs)` config of a kind-"wan" VAEConfig (the Wan2.2 layout:
    residual blocks, patchified input)."""
    if cfg.kind != "wan":
        raise ValueError(f"wan vae: config of kind {cfg.kind!r}, expected 'wan'")
    stages = len(cfg.channel_multipliers) - 1
    if any(not 0 <= level < stages for level in cfg.temporal_downsample_levels):
        raise ValueError(f"wan vae: temporal_downsample_levels {cfg.temporal_downsample_levels} outside the "
                         f"{stages} downsampling stages")
    pixels = 3 * cfg.patch_size**2
    return {
        "base_dim": cfg.base_channels,
        "decoder_base_dim": cfg.decoder_base_channels or cfg.base_channels,
        "z_dim": cfg.latent_channels,
        "dim_mult": list(cfg.channel_multipliers),
        "num_res_blocks": cfg.num_res_blocks,
        "attn_scales": [],
        "temperal_downsample": [stage in cfg.temporal_downsample_levels for stage in range(stages)],
        "dropout": 0.0,
        "latents_mean": _per_channel(cfg.latent_mean, cfg.latent_channels),
        "latents_std": _per_channel(cfg.latent_std, cfg.latent_channels),
        "is_residual": True,
        "in_channels": pixels,
        "out_channels": pixels,
        "patch_size": cfg.patch_size,
        "scale_factor_temporal": cfg.temporal_compression,
        "scale_factor_spatial": cfg.spatial_compression,
    }


def autoencoder_kwargs_from_release(kwargs: Mapping, latent_mean=WAN22_LATENT_MEAN, latent_std=WAN22_LATENT_STD,
                                    patch_size: int = 2) -> dict:
    """`AutoencoderKLWan(**kwargs)` config of the release's `WanVAE_(**kwargs)` (5B values by default)."""
    return autoencoder_kwargs(vae_config_from_release(kwargs, latent_mean, latent_std, patch_size))


# The release's key layout -> diffusers'. A release residual block is a Sequential
# (RMS_norm, SiLU, conv, RMS_norm, SiLU, Dropout, conv) plus a shortcut conv when widths differ.
_RESIDUAL = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight",
    "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight",
    "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight",
    "shortcut.bias": "conv_shortcut.bias",
}
# Names that diffusers keeps: a resample's spatial conv and time conv, the attention block's parts.
_RESAMPLE = {"resample.1.weight", "resample.1.bias", "time_conv.weight", "time_conv.bias"}
_ATTENTION = {"norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias"}
_FIXED = {
    "conv1.weight": "quant_conv.weight",
    "conv1.bias": "quant_conv.bias",
    "conv2.weight": "post_quant_conv.weight",
    "conv2.bias": "post_quant_conv.bias",
}
for _side in ("encoder", "decoder"):
    for _kind in ("weight", "bias"):
        _FIXED[f"{_side}.conv1.{_kind}"] = f"{_side}.conv_in.{_kind}"
        _FIXED[f"{_side}.head.2.{_kind}"] = f"{_side}.conv_out.{_kind}"
    _FIXED[f"{_side}.head.0.gamma"] = f"{_side}.norm_out.gamma"

# encoder.middle.{0,1,2}.rest; encoder.downsamples.{level}.downsamples.{i}.rest (decoder: upsamples)
_MIDDLE = re.compile(r"(encoder|decoder)\.middle\.(\d+)\.(.+)")
_LEVEL = re.compile(r"(encoder\.downsamples|decoder\.upsamples)\.(\d+)\.(?:downsamples|upsamples)\.(\d+)\.(.+)")
_LEVELS = {"encoder.downsamples": ("encoder.down_blocks", "downsampler"),
           "decoder.upsamples": ("decoder.up_blocks", "upsampler")}


def _diffusers_name(key: str) -> str | None:
    """The diffusers name of one release key, or None when the release has no such key."""
    if key in _FIXED:
        return _FIXED[key]
    if match := _MIDDLE.fullmatch(key):
        side, index, rest = match.groups()
        if index == "1" and rest in _ATTENTION:
            return f"{side}.mid_block.attentions.0.{rest}"
        if index in ("0", "2") and rest in _RESIDUAL:
            return f"{side}.mid_block.resnets.{int(index) // 2}.{_RESIDUAL[rest]}"
        return None
    if match := _LEVEL.fullmatch(key):
        prefix, level, index, rest = match.groups()
        blocks, sampler = _LEVELS[prefix]
        # The residual blocks come first in a level's Sequential, the resample (if any) last.
        if rest in _RESIDUAL:
            return f"{blocks}.{level}.resnets.{index}.{_RESIDUAL[rest]}"
        if rest in _RESAMPLE:
            return f"{blocks}.{level}.{sampler}.{rest}"
    return None


def release_names(keys) -> dict[str, str]:
    """{diffusers name: release key} for every key; a ValueError names keys the release never has,
    and two keys that would land on one name."""
    names: dict[str, str] = {}
    unknown = []
    for key in keys:
        name = _diffusers_name(key)
        if name is None:
            unknown.append(key)
        elif name in names:
            raise ValueError(f"wan vae: release keys {names[name]!r} and {key!r} both map to {name!r}")
        else:
            names[name] = key
    if unknown:
        raise ValueError(f"wan vae: {len(unknown)} key(s) not in the release's Wan2.2 VAE layout: {sorted(unknown)[:5]}")
    return names


def wan_vae_state_dict_from_release(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release's `Wan2.2_VAE.pth` state dict under AutoencoderKLWan's names. Every key must be
    one of the release's (ValueError naming it otherwise); `WanVAE.load_release_state_dict` also
    checks that nothing the model needs is missing."""
    return {name: state_dict[key] for name, key in release_names(state_dict).items()}


class WanVAE(nn.Module):
    """The Wan2.2 VAE (kind "wan") with CausalVAE's interface: encode, decode, cfg, save/load."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.model = AutoencoderKLWan(**autoencoder_kwargs(cfg))

    @classmethod
    def from_release(cls, state_dict: Mapping[str, torch.Tensor], kwargs: Mapping | None = None,
                     latent_mean=WAN22_LATENT_MEAN, latent_std=WAN22_LATENT_STD, patch_size: int = 2,
                     source: str = "release state dict") -> WanVAE:
        """The release's `WanVAE_(**kwargs)` (5B by default) with its weights, loaded strictly."""
        cfg = vae_config_from_release(kwargs or {}, latent_mean, latent_std, patch_size)
        with torch.device("meta"):
            vae = cls(cfg)
        vae.load_release_state_dict(state_dict, source)
        return vae

    @classmethod
    def from_release_checkpoint(cls, path: str | Path, kwargs: Mapping | None = None,
                                latent_mean=WAN22_LATENT_MEAN, latent_std=WAN22_LATENT_STD) -> WanVAE:
        """Load the release's `Wan2.2_VAE.pth` (or a .safetensors with its keys); `save_pretrained`
        then writes it as a model directory's vae/ folder."""
        state_dict = load_checkpoint(path, "Wan2.2 VAE checkpoint")
        return cls.from_release(state_dict, kwargs, latent_mean, latent_std, source=str(path))

    def load_release_state_dict(self, state_dict: Mapping[str, torch.Tensor], source: str = "release state dict") -> None:
        """Load weights in the release's key layout, strictly (ValueError naming what does not fit)."""
        names = release_names(state_dict)
        self._load({name: state_dict[key] for name, key in names.items()}, source, names)

    def _load(self, state_dict: dict[str, torch.Tensor], source: str, release_names: dict[str, str] | None = None) -> None:
        expected = self.model.state_dict()
        name = (lambda key: f"{release_names[key]!r} ({key})") if release_names else repr
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{source}: weights do not fit the VAE config: missing {missing[:5]}, "
                             f"unexpected {[name(key) for key in unexpected[:5]]}")
        for key, tensor in state_dict.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(f"{source}: {name(key)} has shape {tuple(tensor.shape)}, "
                                 f"the VAE config needs {tuple(expected[key].shape)}")
        # Built on the meta device (nothing allocated): take the given tensors as they are.
        assign = any(parameter.is_meta for parameter in self.model.parameters())
        self.model.load_state_dict(state_dict, strict=True, assign=assign)

    def _scale(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1/std), per latent channel, shaped to broadcast over [B, C, T, H, W]."""
        shape = (1, self.cfg.latent_channels, 1, 1, 1)
        mean = torch.tensor(_per_channel(self.cfg.latent_mean, self.cfg.latent_channels), dtype=like.dtype)
        std = torch.tensor(_per_channel(self.cfg.latent_std, self.cfg.latent_channels), dtype=like.dtype)
        return mean.view(shape).to(like.device), (1.0 / std).view(shape).to(like.device)

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode_distribution(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels [B, 3, 1+4k, H, W] in [-1, 1] -> the posterior's (mean, logvar), un-normalised,
        each [B, Cz, 1+k, H/s, W/s]."""
        check_pixels(self.cfg, pixels)
        posterior = self.model.encode(pixels.to(self._dtype())).latent_dist
        return posterior.mean, posterior.logvar

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents (the encoder's scale) -> per-channel normalised latents (float32)."""
        latents = latents.float()
        shift, inverse_std = self._scale(latents)
        return (latents - shift) * inverse_std

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Deterministic latents: the posterior mean, normalised per channel, [B, Cz, 1+k, H/s, W/s] (float32)."""
        mean, _ = self.encode_distribution(pixels)
        return self.normalize(mean)

    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Normalised latents [B, Cz, 1+k, h, w] -> pixels [B, 3, 1+4k, h*s, w*s] (float32), clamped
        to [-1, 1] as the release does. `clamp=False` (training, diagnosis) runs the same decoder
        unclamped, so that pixels predicted past the range keep their gradient."""
        if latents.shape[1] != self.cfg.latent_channels:
            raise ValueError(f"vae: latents with {latents.shape[1]} channels; the VAE has {self.cfg.latent_channels}")
        shift, inverse_std = self._scale(latents.float())
        z = (latents.float() / inverse_std + shift).to(self._dtype())
        pixels = self.model.decode(z).sample if clamp else self._decode_unclamped(z)
        return pixels.float()

    def _decode_unclamped(self, z: torch.Tensor) -> torch.Tensor:
        """AutoencoderKLWan's decode loop without its final clamp: one latent frame at a time, the
        first marked as the first chunk, the decoder's causal-conv cache carried across frames."""
        decoder = self.model.decoder
        cache = [None] * sum(isinstance(module, WanCausalConv3d) for module in decoder.modules())
        x = self.model.post_quant_conv(z)
        frames = [decoder(x[:, :, i:i + 1], feat_cache=cache, feat_idx=[0], first_chunk=i == 0)
                  for i in range(x.shape[2])]
        p = self.cfg.patch_size
        return rearrange(torch.cat(frames, dim=2), "b (c pw ph) t h w -> b c t (h ph) (w pw)", ph=p, pw=p)

    def save_pretrained(self, directory: str | Path) -> None:
        """`config.yaml` (our VAEConfig, kind "wan") + `model.safetensors` (diffusers' key names)."""
        save_config_and_weights(directory, self.cfg, self.model.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> WanVAE:
        """Load a folder written by `save_pretrained` (no downloads), strictly."""
        directory = Path(directory)
        cfg = load_dataclass(VAEConfig, directory / "config.yaml")
        if cfg.kind != "wan":
            raise ValueError(f"{directory}: holds a VAE of kind {cfg.kind!r}, not 'wan' (load_vae picks the class)")
        weights = directory / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: VAE weights not found")
        with torch.device("meta"):
            vae = cls(cfg)
        vae._load(load_file(str(weights)), str(weights))
        return vae
