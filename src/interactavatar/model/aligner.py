"""M2V aligner: PIM's structure, block by block, resized to the video token grid and added into AIM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from interactavatar.model.stream import StreamInputs


class MotionToVideoAligner(nn.Module):
    """Before AIM block i (the release's timing): Linear(P_i - P_{i-1}), where P_i is PIM's hidden
    state entering PIM block i (P_0 the patch embedding, P_{-1} = 0), bilinearly resized from the
    motion token grid to the video token grid, added to every video token but the back frames'.
    So AIM block i sees PIM block i-1's residual, and the last PIM block's residual is never used.

    The Linear is bias-free and zero-initialised, so at the start of joint training AIM computes
    exactly what it did alone. Projecting before resizing is the same map (both are linear and act
    on different axes) at (motion/video)^2 of the cost.

    mode: "residual" (every block, the release), "last" (the last AIM block only), "add" (P_i
    itself, not the residual): the ablations of the paper's alignment study.
    """

    def __init__(self, motion_dim: int, video_dim: int, num_layers: int, mode: str = "residual"):
        super().__init__()
        self.mode = mode
        self.num_layers = num_layers
        count = 1 if mode == "last" else num_layers
        self.projections = nn.ModuleList(nn.Linear(motion_dim, video_dim, bias=False) for _ in range(count))
        for projection in self.projections:
            nn.init.zeros_(projection.weight)

    def forward(self, index: int, state: torch.Tensor, previous: torch.Tensor | None, motion: StreamInputs,
                video: StreamInputs) -> torch.Tensor | None:
        """state: P_index [B, Lm, Cm]; previous: the state at the last injection (None: zeros) ->
        [B, Lv, Cv], or None where this mode injects nothing."""
        if self.mode == "last":
            if index != self.num_layers - 1:
                return None
            projection = self.projections[0]
        else:
            projection = self.projections[index]
        feature = state if self.mode == "add" or previous is None else state - previous
        frames = motion.frames
        if video.frames != frames:
            raise ValueError(f"aligner: motion has {frames} latent frames, video {video.frames}")
        motion_tokens = projection(feature[:, : frames * motion.tokens_per_frame])
        grid = rearrange(motion_tokens, "b (f h w) c -> (b f) c h w", f=frames, h=motion.grid[0])
        resized = F.interpolate(grid, size=video.grid, mode="bilinear", align_corners=False)
        injection = rearrange(resized, "(b f) c h w -> b (f h w) c", f=frames)
        return F.pad(injection, (0, 0, 0, video.back_frames * video.tokens_per_frame))
