"""The dual-stream training step (PIM + aligner + AIM) against AIM alone, at the paper's 256:704
motion:video resolution ratio, audio attention on in both.

Video 704 px and motion 256 px through a 16x VAE and patch 2 give 22x22 and 8x8 tokens per frame:
the motion stream adds (256/704)^2 = 13% of the video tokens, so a dual step cannot cost less than
about 1.13x AIM's if PIM is as deep and wide as AIM (less where attention's quadratic cost or AIM's
audio attention dominate, which PIM lacks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.summary import worst_ratio
from benchmarks.timing import interleaved, median_ms, ratio
from interactavatar.config import AudioConfig, InteractAvatarConfig, StreamConfig, TextConfig, VAEConfig
from interactavatar.model import InteractAvatar, Noisy

FLOOR = 1 + (256 / 704) ** 2


def _config(stream: StreamConfig, video: int, motion: int, num_frames: int) -> InteractAvatarConfig:
    return InteractAvatarConfig(
        name="bench",
        pim=stream,
        aim=stream,
        vae=VAEConfig(latent_channels=16),
        text=TextConfig(kind="random", dim=384, max_tokens=32),
        audio=AudioConfig(kind="random", num_layers=4, feature_dim=64, tokens_per_frame=8, projection_dim=128),
        video_size=(video, video),
        motion_size=(motion, motion),
        num_frames=num_frames,
    )


# name -> (config, batch); 704/256 px are the paper's short sides, here square.
SIZES = {"paper-ratio": (_config(StreamConfig(dim=128, num_layers=4, num_heads=4, ffn_dim=384, freq_dim=64),
                                 704, 256, 5), 1)}
QUICK = {"quick": (_config(StreamConfig(dim=32, num_layers=1, num_heads=2, ffn_dim=64, freq_dim=32), 352, 128, 5), 1)}


def _inputs(cfg: InteractAvatarConfig, batch: int, generator: torch.Generator) -> dict:
    s, patch, frames = cfg.vae.spatial_compression, cfg.aim.patch_size[1], cfg.latent_frames
    cz = cfg.vae.latent_channels

    def noisy(size: int) -> Noisy:
        side = size // s
        t = torch.rand(batch, 1, generator=generator).expand(-1, frames) * 1000
        return Noisy(torch.randn(batch, cz, frames, side, side, generator=generator),
                     torch.randn(batch, cz, 1, side, side, generator=generator), t.contiguous())

    audio = cfg.audio
    return {
        "video": noisy(cfg.video_size[0]),
        "motion": noisy(cfg.motion_size[0]),
        "text": torch.randn(batch, cfg.text.max_tokens, cfg.text.dim, generator=generator),
        "audio_windows": torch.randn(batch, cfg.num_frames, audio.window, audio.num_layers, audio.feature_dim,
                                     generator=generator),
        "face_mask": torch.ones(batch, frames, cfg.video_size[0] // s // patch, cfg.video_size[1] // s // patch),
    }


def bench_size(name: str, cfg: InteractAvatarConfig, batch: int, repeats: int) -> dict:
    """One table row: token grids, median times, the dual/AIM ratio against the floor."""
    torch.manual_seed(0)
    model = InteractAvatar(cfg).train()
    x = _inputs(cfg, batch, torch.Generator().manual_seed(1))
    video_target = torch.randn_like(x["video"].latents)
    motion_target = torch.randn_like(x["motion"].latents)

    def step(with_motion: bool):
        def run():
            video, motion = model(x["text"], video=x["video"], motion=x["motion"] if with_motion else None,
                                  audio_windows=x["audio_windows"], face_mask=x["face_mask"])
            loss = F.mse_loss(video, video_target)
            if with_motion:
                loss = loss + F.mse_loss(motion, motion_target)
            loss.backward()
            model.zero_grad(set_to_none=True)
        return run

    times = interleaved({"dual": step(True), "aim": step(False)}, repeats=repeats)
    ms = median_ms(times)
    s, patch = cfg.vae.spatial_compression, cfg.aim.patch_size[1]
    video_grid, motion_grid = cfg.video_size[0] // s // patch, cfg.motion_size[0] // s // patch
    return {
        "size": name,
        "dim/layers/heads/ffn": f"{cfg.aim.dim}/{cfg.aim.num_layers}/{cfg.aim.num_heads}/{cfg.aim.ffn_dim}",
        "video / motion px": f"{cfg.video_size[0]} / {cfg.motion_size[0]}",
        "tokens per frame": f"{video_grid}x{video_grid} / {motion_grid}x{motion_grid}",
        "latent frames (+ref)": f"{cfg.latent_frames}+1",
        "batch": batch,
        "ms dual / AIM": f"{ms['dual']} / {ms['aim']}",
        "ratio": ratio(times, "dual", "aim"),
        "ratio CPU time": ratio(times, "dual", "aim", "cpu"),
        "token floor": round(1 + (motion_grid / video_grid) ** 2, 3),
        "repeats": repeats,
    }


def run(quick: bool = False) -> dict:
    sizes, repeats = (QUICK, 2) if quick else (SIZES, 12)
    rows = [bench_size(name, *size, repeats) for name, size in sizes.items()]
    return {
        "title": "Dual-stream training step vs AIM alone (256:704 motion:video, fp32, CPU)",
        "goal": f"ratio (dual / AIM alone) <= 1.15; arithmetic floor 1 + (256/704)^2 = {FLOOR:.3f}",
        "summary": worst_ratio("Dual-stream training step vs AIM alone", "dual / AIM alone <= 1.15", rows, 1.15),
        "rows": rows,
        "notes": [
            "Step = InteractAvatar forward (text, audio with face mask) + MSE on every velocity returned "
            "+ backward + zero_grad. AIM alone is the same model called with motion=None.",
            "The token floor counts tokens only; the dual step can come in under it, because PIM has no "
            "audio attention and its self-attention is quadratic in its 8x smaller token count.",
        ],
    }
