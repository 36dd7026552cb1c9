"""The release's numerical fixtures (`../shared/release-oracle`, or $INTERACTAVATAR_RELEASE_ORACLES):
random tiny weights under the release's key names, inputs, and what the release's own code computed.

Every size comes from a family's `config.json`: a second fixture set at other sizes runs against the
same tests.
"""

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "release-oracle"


def oracle_root() -> Path:
    """The fixture folder. Named by the variable, it must exist; the default may be absent (a
    checkout without the shared folder beside it), and then the parity tests are skipped, saying so."""
    named = os.environ.get("INTERACTAVATAR_RELEASE_ORACLES")
    if named:
        if not Path(named).is_dir():
            raise FileNotFoundError(f"INTERACTAVATAR_RELEASE_ORACLES={named}: no such folder")
        return Path(named)
    if not DEFAULT.is_dir():
        pytest.skip(f"no release fixtures at {DEFAULT} (set INTERACTAVATAR_RELEASE_ORACLES)")
    return DEFAULT


class Oracle:
    """One fixture family: `config` (config.json), `weights`, `inputs` and `outputs` (tensors)."""

    def __init__(self, family: str):
        self.folder = oracle_root() / family
        self.config = json.loads((self.folder / "config.json").read_text())
        self.weights = load_file(str(self.folder / "weights.safetensors"))
        self.inputs = load_file(str(self.folder / "inputs.safetensors"))
        self.outputs = load_file(str(self.folder / "outputs.safetensors"))


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> None:
    """torch.testing.assert_close with the tensor's name and its largest difference in the message."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    difference = (actual.double() - expected.double()).abs().max().item()
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol,
                               msg=lambda message: f"{name}: max |diff| {difference:.3g}\n{message}")


def release_model(oracle: Oracle):
    """Our InteractAvatar at a DiT fixture's sizes (the tiny preset around it), holding the fixture's
    weights through the release key map, loaded strictly."""
    from interactavatar.config import preset
    from interactavatar.model import InteractAvatar
    from interactavatar.model.release import config_from_release, state_dict_from_release

    config = oracle.config
    # Sizes at which the tiny preset's VAE (8x) and the fixture's 2x2 patches keep the release's 2.75.
    base = dataclasses.replace(preset("tiny"), video_size=(176, 176), motion_size=(64, 64))
    cfg = config_from_release(config["model_kwargs"], config["module_overrides"]["audio_proj"]["kwargs"], base=base)
    network = InteractAvatar(cfg).eval()
    weights = state_dict_from_release(oracle.weights, network.state_dict(), f"{oracle.folder}/weights.safetensors")
    network.load_state_dict(weights, strict=True)
    return network


def release_stream(latents: torch.Tensor, timestep: torch.Tensor, prefix: int, back: int):
    """A release stream input [B, C, F + back, H, W] as our Noisy: the back frames apart, and the
    release's per-token timesteps as per-frame ones (0 on the `prefix` clean frames)."""
    from interactavatar.model import Noisy

    frames = latents.shape[2] - back
    timesteps = timestep.reshape(-1, 1).expand(latents.shape[0], frames).clone()
    timesteps[:, :prefix] = 0
    return Noisy(latents[:, :, :frames], latents[:, :, frames:], timesteps)
