"""Frozen-encoder features computed once per stage: VAE latents, text and audio features.

The VAE (outside the VAE stage), the text encoder and wav2vec2 are frozen, so encoding every clip
once and training on the cached tensors gives the same gradients as encoding per step, many
times faster.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from interactavatar.model.audio import window_features
from interactavatar.model.bundle import ModelBundle


@dataclass
class FeatureCache:
    """Per-clip features stacked along N (None where the stage does not need them), in the release's
    frame layout: each stream's latent frame 0 is its clean prefix (the causal VAE encodes pixel
    frame 0 alone), and `*_back` is the clean frame appended after the frames.

    text: [N, S, Ct] (zero past each prompt's length);
    video: [N, Cz, F, h, w] (frame 0: the reference image), video_back: [N, Cz, 1, h, w] (the object
    image fitted on white, `ClipDataset`'s object_image);
    motion: [N, Cz, F, hm, wm] (frame 0: the reference's pose), motion_back: [N, Cz, 1, hm, wm] (the
    reference image at motion size);
    audio_windows: [N, T, window, layers, D]; face_mask: [N, F, h', w'] on AIM's token grid.
    """

    text: torch.Tensor
    video: torch.Tensor | None = None
    video_back: torch.Tensor | None = None
    motion: torch.Tensor | None = None
    motion_back: torch.Tensor | None = None
    audio_windows: torch.Tensor | None = None
    face_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.text.shape[0]

    def select(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        return {
            f.name: getattr(self, f.name)[indices].to(device)
            for f in fields(self) if getattr(self, f.name) is not None
        }


def token_grid_mask(face_mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[N, F, h, w] mask at any resolution -> [N, F, *grid]: a token is "face" if any of it is."""
    return F.adaptive_max_pool2d(face_mask.float(), grid)


@torch.no_grad()
def build_cache(dataset: Dataset, bundle: ModelBundle, streams: set[str], device: torch.device,
                batch_size: int = 8) -> FeatureCache:
    """Encode every clip of `dataset` for the `streams` a stage trains ("video", "motion", "audio")."""
    cfg = bundle.cfg
    vae = bundle.vae.to(device).eval()
    parts: dict[str, list[torch.Tensor]] = {}

    def add(name: str, value: torch.Tensor) -> None:
        parts.setdefault(name, []).append(value.cpu())

    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        add("text", bundle.text_encoder(list(batch["text"]))[0])
        if "video" in streams:
            add("video", vae.encode(batch["video"].to(device)))
            add("video_back", vae.encode(batch["object_image"][:, :, None].to(device)))
            add("face_mask", token_grid_mask(batch["face_mask"], cfg.token_grid))
        if "motion" in streams:
            add("motion", vae.encode(batch["motion"].to(device)))
            add("motion_back", vae.encode(batch["motion_reference"].to(device)))
        if "audio" in streams:
            frames = batch["video"].shape[2]
            windows = [
                window_features(bundle.audio_encoder(waveform.to(device), frames), cfg.audio.window)
                for waveform in batch["audio"]
            ]
            add("audio_windows", torch.stack(windows))
    return FeatureCache(**{name: torch.cat(values) for name, values in parts.items()})
