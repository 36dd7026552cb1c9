"""What the demo VAE can show of the hand: motion-only VAE training variants, side by side.

    python -m benchmarks.probe_motion_vae --data DATA [--shared-vae DIR] [--steps 400] [--batch-size 4]

Each variant trains a fresh demo-preset VAE on the training clips' motion videos alone (plain torch:
AdamW, lr 1e-3 after 20 warm-up steps, clipping 1.5, seed 0), then encodes and decodes the ground-truth
motion of the test clips and reads it back with the renderer's inverse: the most any PIM on that VAE
could score. `--shared-vae` adds the same round trip for a VAE trained by the real stage (videos and
motion videos alternating), the reference. Not part of `make bench`: it trains for minutes per row.

Variants: the stage's earlier objective (posterior sample, foreground-weighted L1); the posterior
mean decoded instead (no sampling noise); pixels that move weighted up too (`moving`: differing from
the clip's per-pixel median over frames); the same without temporal compression, which tells
whether the 4x time compression is what blurs the moving arm; and the stage's objective now, each
palette colour weighted by its rarity (`palette_class_weights`), alone and with moving pixels x3.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from interactavatar.config import VAEConfig, preset
from interactavatar.data.dataset import ClipDataset
from interactavatar.data.render import decode_frame
from interactavatar.evaluate.metrics import grounding_metrics
from interactavatar.evaluate.truth import load_truth, split_clips
from interactavatar.inference.pipeline import to_frames, to_pixels
from interactavatar.model.vae import CausalVAE, load_vae
from interactavatar.train.objectives import foreground_weights, palette_class_weights

# The demo preset's VAE when this probe ran (2026-11-25); the demo uses AutoencoderKLWan since 2026-12-03.
CAUSAL_DEMO_VAE = VAEConfig(latent_channels=16, base_channels=16, channel_multipliers=(1, 2, 4),
                            temporal_downsample_levels=(0, 1), patch_size=2)

VARIANTS = {
    "foreground x20, posterior sample (the stage's earlier objective)": {},
    "posterior mean": {"deterministic": True},
    "posterior mean + moving x40": {"deterministic": True, "moving": 40.0},
    "posterior mean + moving x40, no temporal compression": {
        "deterministic": True, "moving": 40.0, "temporal_downsample_levels": ()},
    "palette class weights (the stage's objective)": {"palette": True},
    "palette class weights x (1 + 2 x moving)": {"palette": True, "moving_factor": 2.0},
}
METRICS = ("grounding_iou", "contact_accuracy", "pck_body", "pck_hands")


def moving_mask(pixels: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """[B, 3, F, H, W] -> [B, 1, F, H, W]: 1 where a pixel differs from its clip's median frame."""
    still = pixels.median(dim=2, keepdim=True).values
    return ((pixels - still).abs().amax(dim=1, keepdim=True) > threshold).to(pixels.dtype)


def train_motion_vae(motions: torch.Tensor, variant: dict, steps: int, batch_size: int) -> tuple[CausalVAE, float]:
    """motions [N, 3, F, H, W] in [-1, 1] -> (trained VAE, seconds)."""
    cfg = CAUSAL_DEMO_VAE
    if "temporal_downsample_levels" in variant:
        cfg = dataclasses.replace(cfg, temporal_downsample_levels=variant["temporal_downsample_levels"])
    torch.manual_seed(0)
    vae = CausalVAE(cfg)
    class_weights = palette_class_weights(motions) if variant.get("palette") else None
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    started = time.perf_counter()
    for step in range(steps):
        picks = torch.randint(len(motions), (batch_size,))
        pixels = motions[picks]
        mean, logvar = vae.encode_distribution(pixels)
        latents = mean if variant.get("deterministic") else mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        if class_weights is not None:
            weights = class_weights[picks] * (1 + variant.get("moving_factor", 0.0) * moving_mask(pixels))
        else:
            weights = foreground_weights(pixels, 20.0) + variant.get("moving", 0.0) * moving_mask(pixels)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = ((vae.decode(latents, clamp=False) - pixels).abs() * weights).mean() + 1e-6 * kl
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.5)
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 20)
        optimizer.step()
    return vae.eval(), time.perf_counter() - started


@torch.no_grad()
def round_trip(vae: CausalVAE, data: Path, num_clips: int) -> dict[str, float]:
    """Mean grounding metrics of the test clips' ground-truth motion after encode + decode."""
    cfg = dataclasses.replace(preset("demo"), vae=vae.cfg)
    rows = []
    for clip in split_clips(data, "test", num_clips):
        truth = load_truth(clip, cfg)
        decoded = to_frames(vae.decode(vae.encode(to_pixels(truth.motion, "cpu"))))
        rows.append(grounding_metrics([decode_frame(frame) for frame in decoded], truth.motion_decoded,
                                      truth.other_boxes, short_side=min(decoded.shape[1:3])))
    return {key: float(np.mean([row[key] for row in rows if row[key] is not None])) for key in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--shared-vae", type=Path, help="a VAE directory from `interactavatar train vae`")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-clips", type=int, default=16)
    parser.add_argument("--variants", nargs="*", help="names (or unique prefixes) of the variants to run; all by default")
    args = parser.parse_args()

    dataset = ClipDataset(args.data, preset("demo"), split="train")
    motions = torch.stack([dataset[i]["motion"] for i in range(len(dataset))])
    print(f"| VAE | train s | {' | '.join(METRICS)} |\n|---|---|{'---|' * len(METRICS)}")
    if args.shared_vae:
        scores = round_trip(load_vae(args.shared_vae).eval(), args.data, args.num_clips)
        print(f"| shared stage ({args.shared_vae.name}) | | {' | '.join(f'{scores[k]:.3f}' for k in METRICS)} |")
    chosen = {name: v for name, v in VARIANTS.items() if not args.variants or any(name.startswith(p) for p in args.variants)}
    for name, variant in chosen.items():
        vae, seconds = train_motion_vae(motions, variant, args.steps, args.batch_size)
        scores = round_trip(vae, args.data, args.num_clips)
        print(f"| {name} | {seconds:.0f} | {' | '.join(f'{scores[k]:.3f}' for k in METRICS)} |", flush=True)


if __name__ == "__main__":
    main()
