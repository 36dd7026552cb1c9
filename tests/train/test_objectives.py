"""The objectives train in the release's frame layout: latent frame 0 of each stream is its clean
prefix (the clean latent at timestep 0, out of the loss), the back frames are the cache's
`video_back` / `motion_back`; the PIM curriculum and the pose-driven joint steps as documented."""

from __future__ import annotations

import pytest
import torch

from interactavatar.config import preset
from interactavatar.model import InteractAvatar
from interactavatar.train.curriculum import Curriculum
from interactavatar.train.objectives import AudioObjective, JointObjective, PIMObjective
from interactavatar.train.sampling import StepRandomness

CFG = preset("tiny")


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """Two clips' cached features at the tiny preset (FeatureCache's names and shapes)."""
    generator = torch.Generator().manual_seed(0)
    randn = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    c, cz, frames, audio = CFG.vae.spatial_compression, CFG.vae.latent_channels, CFG.latent_frames, CFG.audio
    motion_grid = (CFG.motion_size[0] // c, CFG.motion_size[1] // c)
    return {
        "text": randn(2, CFG.text.max_tokens, CFG.text.dim),
        "video": randn(2, cz, frames, *CFG.latent_grid), "video_back": randn(2, cz, 1, *CFG.latent_grid),
        "motion": randn(2, cz, frames, *motion_grid), "motion_back": randn(2, cz, 1, *motion_grid),
        "audio_windows": randn(2, CFG.num_frames, audio.window, audio.num_layers, audio.feature_dim),
        "face_mask": torch.ones(2, frames, *CFG.token_grid),
    }


def _randomness(step: int = 3) -> StepRandomness:
    return StepRandomness.keyed(0, step, range(2))


def _watch(module: torch.nn.Module, frame: int | None = None) -> list:
    """Record the stream inputs `module` receives; when `frame` is given, add 1e3 to that frame of
    every velocity it returns (a frame the loss ignores leaves the loss unchanged)."""
    calls, forward = [], module.forward

    def corrupt(velocity):
        if velocity is None or frame is None:
            return velocity
        velocity = velocity.clone()
        velocity[:, :, frame] += 1e3
        return velocity

    def watched(*args, **kwargs):
        calls.append((args, kwargs))
        output = forward(*args, **kwargs)
        return tuple(corrupt(v) for v in output) if isinstance(output, tuple) else corrupt(output)

    module.forward = watched
    return calls


def _loss(objective: torch.nn.Module, watched: torch.nn.Module, batch: dict, frame: int | None = None):
    calls = _watch(watched, frame)
    try:
        with torch.no_grad():
            outputs = objective(batch, _randomness())
    finally:
        del watched.forward
    return outputs, calls


def _assert_clean_prefix(noisy, clean: torch.Tensor, back: torch.Tensor) -> None:
    assert noisy.timesteps.shape == clean.shape[:1] + clean.shape[2:3]
    assert noisy.timesteps[:, 0].eq(0).all() and noisy.timesteps[:, 1:].gt(0).all()
    torch.testing.assert_close(noisy.latents[:, :, 0], clean[:, :, 0], rtol=0, atol=0)
    assert not torch.allclose(noisy.latents[:, :, 1:], clean[:, :, 1:])
    assert noisy.back is back


def test_audio_objective_keeps_the_reference_frame_clean_and_out_of_the_loss(batch):
    torch.manual_seed(0)
    model = InteractAvatar(CFG)
    objective = AudioObjective(model, shift=5.0, text_dropout=0.0, audio_dropout=0.0)
    plain, calls = _loss(objective, model, batch)
    (_, kwargs), = calls
    _assert_clean_prefix(kwargs["video"], batch["video"], batch["video_back"])
    assert kwargs.get("motion") is None
    assert _loss(objective, model, batch, frame=0)[0]["loss"] == plain["loss"]
    assert _loss(objective, model, batch, frame=1)[0]["loss"] > plain["loss"] + 1e4


def test_joint_objective_keeps_both_prefixes_clean_and_out_of_the_loss(batch):
    torch.manual_seed(0)
    model = InteractAvatar(CFG)
    objective = JointObjective(model, shift=5.0, text_dropout=0.0, audio_dropout=0.0, clean_motion_probability=0.0)
    plain, calls = _loss(objective, model, batch)
    (_, kwargs), = calls
    _assert_clean_prefix(kwargs["video"], batch["video"], batch["video_back"])
    _assert_clean_prefix(kwargs["motion"], batch["motion"], batch["motion_back"])
    # Both streams share the timestep of their noisy frames.
    torch.testing.assert_close(kwargs["video"].timesteps[:, 1:], kwargs["motion"].timesteps[:, 1:])
    assert "motion_loss" in plain
    assert _loss(objective, model, batch, frame=0)[0]["loss"] == plain["loss"]
    assert _loss(objective, model, batch, frame=1)[0]["loss"] > plain["loss"] + 1e4


def test_pose_driven_joint_steps_give_the_whole_motion_clean(batch):
    torch.manual_seed(0)
    model = InteractAvatar(CFG)
    objective = JointObjective(model, shift=5.0, clean_motion_probability=1.0)
    outputs, calls = _loss(objective, model, batch)
    (_, kwargs), = calls
    motion = kwargs["motion"]
    assert motion.timesteps.eq(0).all() and motion.back is batch["motion_back"]
    torch.testing.assert_close(motion.latents, batch["motion"], rtol=0, atol=0)
    _assert_clean_prefix(kwargs["video"], batch["video"], batch["video_back"])
    assert "motion_loss" not in outputs


@pytest.mark.parametrize("task", ["detection", "continuation", "generation"])
def test_pim_curriculum_layouts(batch, task):
    torch.manual_seed(0)
    model = InteractAvatar(CFG)
    weights = {name: float(name == task) for name in ("detection", "continuation", "generation")}
    objective = PIMObjective(model, Curriculum(**weights), shift=5.0, text_dropout=0.0)
    plain, calls = _loss(objective, model.pim, batch)
    (args, _), = calls
    latents, back, timesteps, _ = args
    assert back is batch["motion_back"] and f"loss_{task}" in plain
    frames = 1 if task == "detection" else CFG.latent_frames
    assert latents.shape[2] == timesteps.shape[1] == frames
    if task == "continuation":  # the release's layout: the reference's pose given clean
        assert timesteps[:, 0].eq(0).all() and timesteps[:, 1:].gt(0).all()
        torch.testing.assert_close(latents[:, :, 0], batch["motion"][:, :, 0], rtol=0, atol=0)
        assert _loss(objective, model.pim, batch, frame=0)[0]["loss"] == plain["loss"]
    else:  # detection and generation denoise every frame, the first one included
        assert timesteps.gt(0).all()
        assert _loss(objective, model.pim, batch, frame=0)[0]["loss"] > plain["loss"] + 1e4
