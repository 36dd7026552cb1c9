"""One DiT stream, a flow-matching training step (forward, MSE to a velocity target, backward),
ours (`DiTStream`, as PIM runs it) against diffusers' WanTransformer3DModel at the same
configuration, weights and tokens.

Ours denoises F frames and appends the clean reference frame at timestep 0; diffusers gets the
same F+1 frames as one clip, so both see the same token count. Two diffusers inputs are timed:
per-token timesteps with the reference tokens at 0 (Wan2.2-TI2V's way, the same function as ours)
and one scalar timestep per sample (cheaper for it, not the same function): the stricter bar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.summary import worst_ratio
from benchmarks.timing import interleaved, median_ms, ratio
from benchmarks.wan_reference import build_wan, to_wan_state_dict
from interactavatar.config import StreamConfig
from interactavatar.model.stream import DiTStream

LATENT_CHANNELS, TEXT_DIM, TEXT_TOKENS = 16, 384, 32

# name -> (stream config, batch, latent frames F (the reference makes F+1), latent height = width)
SIZES = {
    "demo": (StreamConfig(dim=128, num_layers=4, num_heads=4, ffn_dim=384, freq_dim=64), 2, 5, 16),
    "large": (StreamConfig(dim=256, num_layers=8, num_heads=8, ffn_dim=1024, freq_dim=256), 1, 5, 24),
}
# More rounds where a round is cheap: the spread shrinks, the run stays within minutes.
REPEATS = {"demo": 15, "large": 8}
QUICK = {"quick": (StreamConfig(dim=32, num_layers=1, num_heads=2, ffn_dim=64, freq_dim=32), 1, 1, 8)}


def _inputs(batch: int, frames: int, side: int, patch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    latents = torch.randn(batch, LATENT_CHANNELS, frames, side, side, generator=generator)
    reference = torch.randn(batch, LATENT_CHANNELS, 1, side, side, generator=generator)
    t = torch.rand(batch, generator=generator) * 1000
    tokens_per_frame = (side // patch) ** 2
    per_token = torch.cat([t[:, None].expand(-1, frames * tokens_per_frame),
                           torch.zeros(batch, tokens_per_frame)], dim=1)
    return {
        "latents": latents,
        "reference": reference,
        "clip": torch.cat([latents, reference], dim=2),
        "t": t,
        "frame_t": t[:, None].expand(-1, frames).contiguous(),
        "token_t": per_token,
        "text": torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=generator),
        "target": torch.randn(batch, LATENT_CHANNELS, frames, side, side, generator=generator),
    }


def _step(model: torch.nn.Module, forward, target: torch.Tensor) -> torch.Tensor:
    """One training step without the optimizer (identical for both): forward, MSE, backward."""
    out = forward()
    F.mse_loss(out[:, :, : target.shape[2]], target).backward()
    model.zero_grad(set_to_none=True)
    return out


def bench_size(name: str, cfg: StreamConfig, batch: int, frames: int, side: int, repeats: int) -> dict:
    """One table row: sizes, parameter counts, finiteness, median times and ratios."""
    torch.manual_seed(0)
    ours = DiTStream(cfg, LATENT_CHANNELS, TEXT_DIM, text_len=TEXT_TOKENS).train()
    # Wan zero-initialises the head; random head weights keep the backward pass non-trivial.
    torch.nn.init.normal_(ours.head.proj.weight, std=0.02)
    theirs = build_wan(cfg, LATENT_CHANNELS, TEXT_DIM).train()
    theirs.load_state_dict(to_wan_state_dict(ours), strict=True)
    x = _inputs(batch, frames, side, cfg.patch_size[1], torch.Generator().manual_seed(1))

    def run_theirs(timestep):
        return lambda: theirs(x["clip"], timestep, x["text"], return_dict=False)[0]

    steps = {
        "ours": lambda: _step(ours, lambda: ours(x["latents"], x["reference"], x["frame_t"], x["text"]), x["target"]),
        "diffusers": lambda: _step(theirs, run_theirs(x["token_t"]), x["target"]),
        "diffusers_scalar_t": lambda: _step(theirs, run_theirs(x["t"]), x["target"]),
    }
    finite = all(bool(torch.isfinite(step()).all()) for step in steps.values())
    times = interleaved(steps, repeats=repeats)
    ms = median_ms(times)
    return {
        "size": name,
        "dim/layers/heads/ffn": f"{cfg.dim}/{cfg.num_layers}/{cfg.num_heads}/{cfg.ffn_dim}",
        "latent B,C,F+1,H,W": f"{batch},{LATENT_CHANNELS},{frames}+1,{side},{side}",
        "tokens": batch * (frames + 1) * (side // cfg.patch_size[1]) ** 2,
        "params ours / diffusers": f"{_count(ours):,} / {_count(theirs):,}",
        "finite": finite,
        "ms ours / diffusers / scalar-t": f"{ms['ours']} / {ms['diffusers']} / {ms['diffusers_scalar_t']}",
        "ratio": ratio(times, "ours", "diffusers"),
        "ratio CPU time": ratio(times, "ours", "diffusers", "cpu"),
        "ratio vs scalar-t": ratio(times, "ours", "diffusers_scalar_t"),
        "ratio vs scalar-t, CPU time": ratio(times, "ours", "diffusers_scalar_t", "cpu"),
        "repeats": repeats,
    }


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(quick: bool = False) -> dict:
    sizes = QUICK if quick else SIZES
    rows = [bench_size(name, *size, REPEATS.get(name, 2)) for name, size in sizes.items()]
    return {
        "title": "One DiT stream vs diffusers WanTransformer3DModel (training step, fp32, CPU)",
        "goal": "ratio (ours / diffusers, same function: per-token timesteps) <= 0.83",
        # The goal holds at every size: the headline is the worst size's median ratio.
        "summary": worst_ratio("One DiT stream vs diffusers Wan, training step",
                               "ours / diffusers <= 0.83 at every size", rows, 0.83),
        "rows": rows,
        "notes": [
            "Same weights in both (ours loaded into diffusers by name, `benchmarks/wan_reference.py`): "
            "with no reference frame the outputs agree to 1e-6, so the ratio compares two "
            "implementations of one function.",
            "Step = forward + MSE to a random velocity target on the F noisy frames + backward + "
            "zero_grad; no optimizer step (it would be identical for both).",
            "`ratio`: against diffusers given per-token timesteps with the reference frame's tokens at 0 "
            "(Wan2.2-TI2V's way; the same function as ours). `vs scalar-t`: diffusers given one "
            "timestep per sample, which also noises the reference frame: a different, cheaper function, "
            "listed as the stricter bar.",
            "Ratios are medians of per-round ratios (rounds interleave ours, diffusers, scalar-t), "
            "[interquartile range]; `CPU time` uses this process's CPU seconds, steadier than wall time "
            "when neighbours load the machine.",
            "Structural difference: ours gives the reference frame temporal RoPE index -1, diffusers "
            "index F (the next frame); the cost is the same.",
            "Where the gap comes from: adaLN modulation per frame. Ours broadcasts a [B, frames, 6, C] "
            "modulation over each frame's tokens; diffusers, to hold the reference frame at t=0, runs "
            "its time MLPs on every token and carries [B, tokens, 6, C] tensors through every block "
            "(forward and backward), so the gap grows with the tokens per frame. Against the scalar "
            "timestep (equal work) the two are close: a step is GEMMs and flash attention (about "
            "two thirds of the CPU time, identical in both) plus elementwise passes.",
            "Kernel-level changes to dit.py/stream.py, measured against the previous version at the "
            "demo size (new/old 0.97 [0.90, 1.17] at 2 threads, 0.98 [0.95, 1.02] at 1 thread, CPU "
            "time): q|k|v as one GEMM over the concatenated weights (state-dict names unchanged), q "
            "and k RMS-normalised and rotated in one op each, RoPE rotations built once per forward "
            "instead of twice per block, modulation and gated residuals as one addcmul each; aten "
            "calls per training step 4,795 -> 4,327. Fewer launches matter most when the cores are "
            "shared: each parallel region waits for a descheduled thread.",
        ],
    }
