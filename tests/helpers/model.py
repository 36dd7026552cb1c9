"""Builders for the network tests: heads given weights, random latents and conditions at a preset's shapes."""

import torch

from interactavatar.model import InteractAvatar, Noisy


def randomize_heads(model: InteractAvatar, seed: int = 0) -> InteractAvatar:
    """The heads start at zero (Wan's init), which would make every output identically zero and
    every invariance test pass vacuously; give them weights."""
    generator = torch.Generator().manual_seed(seed)
    for stream in (model.pim, model.aim):
        weight = stream.head.proj.weight
        weight.data = torch.randn(weight.shape, generator=generator) * 0.1
    return model


def make_inputs(cfg, batch: int = 2, seed: int = 0, timestep: float = 500.0):
    """Random latents and conditions shaped as the tiny preset's VAE and encoders produce them."""
    g = torch.Generator().manual_seed(seed)
    cz, frames = cfg.vae.latent_channels, cfg.latent_frames
    s = cfg.vae.spatial_compression
    vh, vw = cfg.video_size[0] // s, cfg.video_size[1] // s
    mh, mw = cfg.motion_size[0] // s, cfg.motion_size[1] // s
    timesteps = torch.full((batch, frames), timestep)
    video = Noisy(torch.randn(batch, cz, frames, vh, vw, generator=g), torch.randn(batch, cz, 1, vh, vw, generator=g), timesteps)
    motion = Noisy(torch.randn(batch, cz, frames, mh, mw, generator=g), torch.randn(batch, cz, 1, mh, mw, generator=g), timesteps)
    audio = torch.randn(batch, cfg.num_frames, cfg.audio.window, cfg.audio.num_layers, cfg.audio.feature_dim, generator=g)
    text = torch.randn(batch, 6, cfg.text.dim, generator=g)
    patch = cfg.aim.patch_size[1]
    face_mask = torch.ones(batch, frames, vh // patch, vw // patch)
    return dict(text=text, video=video, motion=motion, audio_windows=audio, face_mask=face_mask)
