"""Causal 3D convolutional VAE shared by the video, the motion video and the reference image.

Frames: 1 + 4k in, 1 + k latent frames out (the first frame is encoded on its own, so a single
image is a one-frame video). Space: `patch_size` pixel-unshuffle then one 2x per downsampling stage.

`build_vae` / `load_vae` give the class a config's `kind` names: this one ("causal"), or the
release's Wan2.2 VAE ("wan", model/wan_vae.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file
from torch import nn

from interactavatar.config import VAEConfig
from interactavatar.model.weights import load_dataclass, save_config_and_weights

if TYPE_CHECKING:  # the Wan2.2 VAE needs diffusers: imported only when a config asks for it
    from interactavatar.model.wan_vae import WanVAE


class CausalConv3d(nn.Conv3d):
    """Conv3d padded only on the past side of time: output frame t sees input frames <= t."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(3, 3, 3)):
        kt, kh, kw = kernel_size
        super().__init__(in_channels, out_channels, kernel_size, padding=(0, kh // 2, kw // 2))
        self.time_padding = kt - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (0, 0, 0, 0, self.time_padding, 0)))


class ChannelRMSNorm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.scale = channels**0.5
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            ChannelRMSNorm(in_channels), nn.SiLU(), CausalConv3d(in_channels, out_channels),
            ChannelRMSNorm(out_channels), nn.SiLU(), CausalConv3d(out_channels, out_channels),
        )
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class Downsample(nn.Module):
    """Halve space, and time when `temporal`: frames 1 + 2m -> 1 + m (the first frame stays alone)."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.spatial = nn.Conv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.time_conv = nn.Conv3d(channels, channels, (2, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.spatial(x)
        if self.time_conv is not None and x.shape[2] > 1:
            x = torch.cat([x[:, :, :1], self.time_conv(x[:, :, 1:])], dim=2)
        return x


class Upsample(nn.Module):
    """Double space, and time when `temporal`: frames 1 + m -> 1 + 2m."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.spatial = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))
        self.time_conv = CausalConv3d(channels, 2 * channels, (3, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_conv is not None and x.shape[2] > 1:
            doubled = rearrange(self.time_conv(x[:, :, 1:]), "b (two c) t h w -> b c (t two) h w", two=2)
            x = torch.cat([x[:, :, :1], doubled], dim=2)
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return self.spatial(x)


def check_pixels(cfg: VAEConfig, pixels: torch.Tensor) -> None:
    """Refuse a video [B, 3, T, H, W] whose frames or sides the VAE cannot compress, naming why."""
    frames, height, width = pixels.shape[2:]
    tc, sc = cfg.temporal_compression, cfg.spatial_compression
    if (frames - 1) % tc or height % sc or width % sc:
        raise ValueError(
            f"vae: input of {frames} frames at {height}x{width}; needs 1+{tc}k frames and sides divisible by {sc}"
        )


class CausalVAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if cfg.kind != "causal":
            raise ValueError(f"vae: CausalVAE got a config of kind {cfg.kind!r}; build_vae/load_vae pick the class")
        self.cfg = cfg
        p, mults, base = cfg.patch_size, cfg.channel_multipliers, cfg.base_channels
        channels = [base * m for m in mults]
        stages = len(mults) - 1

        self.encoder_in = CausalConv3d(3 * p * p, channels[0])
        self.encoder_levels = nn.ModuleList()
        for level in range(len(mults)):
            blocks = [ResBlock(channels[max(level - 1, 0)], channels[level])]
            if level < stages:
                blocks.append(Downsample(channels[level], temporal=level in cfg.temporal_downsample_levels))
            self.encoder_levels.append(nn.Sequential(*blocks))
        self.encoder_out = nn.Sequential(
            ResBlock(channels[-1], channels[-1]), ChannelRMSNorm(channels[-1]), nn.SiLU(),
            CausalConv3d(channels[-1], 2 * cfg.latent_channels),
        )

        self.decoder_in = nn.Sequential(CausalConv3d(cfg.latent_channels, channels[-1]), ResBlock(channels[-1], channels[-1]))
        self.decoder_levels = nn.ModuleList()
        for level in reversed(range(len(mults))):
            blocks = [ResBlock(channels[min(level + 1, stages)], channels[level])]
            if level > 0:
                blocks.append(Upsample(channels[level], temporal=(level - 1) in cfg.temporal_downsample_levels))
            self.decoder_levels.append(nn.Sequential(*blocks))
        self.decoder_out = nn.Sequential(ChannelRMSNorm(channels[0]), nn.SiLU(), CausalConv3d(channels[0], 3 * p * p))

    def encode_distribution(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels: [B, 3, 1+4k, H, W] in [-1, 1] -> (mean, logvar), each [B, Cz, 1+k, H/s, W/s]."""
        check_pixels(self.cfg, pixels)
        p = self.cfg.patch_size
        x = rearrange(pixels, "b c t (h ph) (w pw) -> b (c ph pw) t h w", ph=p, pw=p)
        x = self.encoder_in(x)
        for level in self.encoder_levels:
            x = level(x)
        mean, logvar = self.encoder_out(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents (the encoder's scale) -> the unit-scale latents diffusion sees."""
        return (latents - self.cfg.latent_mean) / self.cfg.latent_std

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Deterministic, normalised latents (the distribution's mean): [B, Cz, 1+k, H/s, W/s]."""
        mean, _ = self.encode_distribution(pixels)
        return self.normalize(mean)

    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Normalised latents [B, Cz, 1+k, h, w] -> pixels [B, 3, 1+4k, h*s, w*s] in [-1, 1].

        Training decodes with `clamp=False`: a clamp would zero the gradient of every pixel predicted
        past the range, and a VAE that overshoots on thin bright lines (motion videos) would never
        pull them back.
        """
        x = self.decoder_in(latents * self.cfg.latent_std + self.cfg.latent_mean)
        for level in self.decoder_levels:
            x = level(x)
        p = self.cfg.patch_size
        pixels = rearrange(self.decoder_out(x), "b (c ph pw) t h w -> b c t (h ph) (w pw)", ph=p, pw=p)
        return pixels.clamp(-1.0, 1.0) if clamp else pixels

    def save_pretrained(self, directory: str | Path) -> None:
        save_config_and_weights(directory, self.cfg, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> CausalVAE:
        """Load `config.yaml` + `model.safetensors` from a local folder (no downloads)."""
        directory = Path(directory)
        vae = cls(load_dataclass(VAEConfig, directory / "config.yaml"))
        weights = directory / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: VAE weights not found")
        vae.load_state_dict(load_file(str(weights)))
        return vae


def build_vae(cfg: VAEConfig) -> CausalVAE | WanVAE:
    """A new VAE of the class `cfg.kind` names (randomly initialised; under a `torch.device("meta")`
    context it takes no memory)."""
    if cfg.kind == "wan":
        from interactavatar.model.wan_vae import WanVAE

        return WanVAE(cfg)
    return CausalVAE(cfg)


def load_vae(directory: str | Path) -> CausalVAE | WanVAE:
    """Load a VAE folder (`config.yaml` + `model.safetensors`) as the class its config's kind names."""
    directory = Path(directory)
    if load_dataclass(VAEConfig, directory / "config.yaml").kind == "wan":
        from interactavatar.model.wan_vae import WanVAE

        return WanVAE.from_pretrained(directory)
    return CausalVAE.from_pretrained(directory)
