"""A training step under DeepSpeed (our engine: ZeRO-2, fp32 on the CPU, clipping 1.5) against a
plain torch loop (AdamW, the same clipping) on the same PIM objective and batch, interleaved.

The ratio is the engine's overhead per step; the rows also give samples/s and the process's peak
RSS. Both loops start from the same weights and see the same batches and noise.
"""

from __future__ import annotations

import copy

import torch

from benchmarks.summary import headline, ratio_text
from benchmarks.timing import interleaved, median_ms, ratio
from interactavatar.config import preset
from interactavatar.model import InteractAvatar
from interactavatar.train.curriculum import Curriculum
from interactavatar.train.engine import EngineConfig, create_engine
from interactavatar.train.objectives import PIMObjective
from interactavatar.train.sampling import StepRandomness
from interactavatar.train.tracking import peak_memory_mb


def _batch(cfg, batch: int, generator: torch.Generator) -> dict:
    side = (cfg.motion_size[0] // cfg.vae.spatial_compression, cfg.motion_size[1] // cfg.vae.spatial_compression)
    cz, frames = cfg.vae.latent_channels, cfg.latent_frames
    return {
        "motion": torch.randn(batch, cz, frames, *side, generator=generator),
        "motion_back": torch.randn(batch, cz, 1, *side, generator=generator),
        "text": torch.randn(batch, cfg.text.max_tokens, cfg.text.dim, generator=generator),
    }


def bench_preset(name: str, batch: int, repeats: int) -> dict:
    cfg = preset(name)
    torch.manual_seed(0)
    objective = PIMObjective(InteractAvatar(cfg), Curriculum(0, 0, 1), cfg.sampler.shift)
    plain = copy.deepcopy(objective)
    engine_cfg = EngineConfig(micro_batch_size=batch, learning_rate=1e-4)
    engine = create_engine(objective, engine_cfg)
    optimizer = torch.optim.AdamW(plain.parameters(), lr=1e-4)
    data = _batch(cfg, batch, torch.Generator().manual_seed(1))
    steps = {"deepspeed": 0, "torch": 0}

    def deepspeed_step():
        outputs = engine(data, StepRandomness.keyed(0, steps["deepspeed"], range(batch)))
        engine.backward(outputs["loss"])
        engine.step()
        steps["deepspeed"] += 1

    def torch_step():
        loss = plain(data, StepRandomness.keyed(0, steps["torch"], range(batch)))["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), engine_cfg.gradient_clipping)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps["torch"] += 1

    times = interleaved({"deepspeed": deepspeed_step, "torch": torch_step}, repeats=repeats)
    ms = median_ms(times)
    return {
        "preset": name,
        "PIM parameters": sum(p.numel() for p in plain.parameters()),
        "batch": batch,
        "ms DeepSpeed / torch": f"{ms['deepspeed']} / {ms['torch']}",
        "ratio": ratio(times, "deepspeed", "torch"),
        "ratio CPU time": ratio(times, "deepspeed", "torch", "cpu"),
        "samples/s DeepSpeed": round(1000 * batch / ms["deepspeed"], 1),
        "peak RSS MB": round(peak_memory_mb()["peak_rss_mb"]),
        "repeats": repeats,
    }


def run(quick: bool = False) -> dict:
    rows = [bench_preset("tiny", 2, 3)] if quick else [bench_preset("demo", 8, 20)]
    return {
        "title": "Training step: DeepSpeed engine vs a plain torch loop (PIM objective, fp32, CPU)",
        "goal": "ratio (DeepSpeed / torch) close to 1: the engine should cost little on one process",
        "summary": headline(
            "Training step: DeepSpeed vs plain torch", "DeepSpeed / torch close to 1 (no numeric target)",
            latest=rows[0]["ratio"]["median"],
            latest_text="; ".join(f"{row['preset']} {ratio_text(row['ratio'])}" for row in rows),
            verdict_text="no numeric goal (reported)"),
        "rows": rows,
        "notes": ["Step = PIM generation-task flow-matching loss on the preset's motion latents, backward, "
                  "gradient clipping 1.5, AdamW. DeepSpeed runs ZeRO-2 in one process (gloo), torch's AdamW."],
    }
