import pytest
import torch
from helpers.model import make_inputs

from interactavatar.model.flow import (
    Conditioning,
    add_noise,
    flow_loss,
    sample,
    sample_training_sigmas,
    shift_sigmas,
)


def test_shift_pushes_sigmas_towards_noise():
    sigmas = torch.tensor([0.0, 0.25, 0.5, 1.0])
    shifted = shift_sigmas(sigmas, 5.0)
    torch.testing.assert_close(shifted, torch.tensor([0.0, 1.25 / 2.0, 2.5 / 3.0, 1.0]))
    drawn = sample_training_sigmas(4096, 5.0, torch.Generator().manual_seed(0))
    assert drawn.min() >= 0 and drawn.max() <= 1
    assert drawn.median() > 0.7  # median of 5u/(1+4u) at u=0.5 is 0.833


def test_loss_matches_a_hand_computation():
    latents = torch.tensor([1.0, 2.0]).reshape(1, 1, 2, 1, 1)
    noise = torch.tensor([3.0, -1.0]).reshape(1, 1, 2, 1, 1)
    reference = torch.zeros(1, 1, 1, 1, 1)
    stream = add_noise(latents, reference, torch.tensor([0.25]), noise, clean_frames=1)
    # frame 0 stays clean at t=0; frame 1: x = 0.75 * 2 + 0.25 * -1 = 1.25 at t = 250
    torch.testing.assert_close(stream.noisy.latents.flatten(), torch.tensor([1.0, 1.25]))
    torch.testing.assert_close(stream.noisy.timesteps, torch.tensor([[0.0, 250.0]]))
    # target velocity noise - x0 = [2, -3]; prediction [0, 0] -> only frame 1 counts: 9
    prediction = torch.zeros_like(latents)
    assert flow_loss(prediction, stream).item() == pytest.approx(9.0)
    stream_all = add_noise(latents, reference, torch.tensor([0.25]), noise)
    assert flow_loss(prediction, stream_all).item() == pytest.approx((4.0 + 9.0) / 2)


def conditioning(cfg, inputs, batch=1):
    """The release's layout from random latents: each stream's first frame as its clean prefix."""
    return Conditioning(
        text=inputs["text"][:batch],
        negative_text=torch.zeros_like(inputs["text"][:batch]),
        video_prefix=inputs["video"].latents[:batch, :, :1],
        video_back=inputs["video"].back[:batch],
        motion_prefix=inputs["motion"].latents[:batch, :, :1],
        motion_back=inputs["motion"].back[:batch],
        audio_windows=inputs["audio_windows"][:batch],
        face_mask=inputs["face_mask"][:batch],
    )


def test_sampler_is_deterministic_for_a_seed_and_keeps_the_prefix(tiny_cfg, tiny_model):
    cond = conditioning(tiny_cfg, make_inputs(tiny_cfg))
    run = lambda seed: sample(tiny_model, cond, latent_frames=tiny_cfg.latent_frames, steps=3, seed=seed)  # noqa: E731
    video_a, motion_a = run(7)
    video_b, motion_b = run(7)
    video_c, _ = run(8)
    assert torch.equal(video_a, video_b) and torch.equal(motion_a, motion_b)
    assert not torch.allclose(video_a, video_c)
    assert torch.equal(video_a[:, :, :1], cond.video_prefix) and torch.equal(motion_a[:, :, :1], cond.motion_prefix)


@pytest.mark.parametrize(("guidance", "skip_block", "expected"), [
    ("three-pass", None, [3, 3, 3, 3]),  # conditional, text dropped, text and audio dropped
    ("release", None, [2, 2, 2, 2]),  # conditional, unconditional
    # while t > 800 (the first two of 4 steps) the skipping unconditional pass runs on its own
    ("release", 0, [1, 1, 1, 1, 2, 2]),
])
def test_guidance_passes_are_batched_into_as_few_forwards_as_possible(tiny_cfg, tiny_model, guidance, skip_block,
                                                                      expected):
    cond = conditioning(tiny_cfg, make_inputs(tiny_cfg))
    batch_sizes = []
    handle = tiny_model.register_forward_hook(lambda module, args, output: batch_sizes.append(output[0].shape[0]))
    try:
        sample(tiny_model, cond, latent_frames=tiny_cfg.latent_frames, steps=4, guidance=guidance, skip_block=skip_block)
    finally:
        handle.remove()
    assert batch_sizes == expected


@pytest.mark.parametrize("guidance", ["three-pass", "release"])
def test_unit_guidance_scales_reduce_to_the_conditional_model(tiny_cfg, tiny_model, guidance):
    """u + 1*(c - no_text) + 1*(no_text - u) = c and u + 1*(c - u) = c: with unit scales the guided
    sampler must follow the conditional velocity exactly, which pins down which pass is which."""
    from interactavatar.model import Noisy
    from interactavatar.model.flow import release_timesteps

    inputs = make_inputs(tiny_cfg)
    cond = conditioning(tiny_cfg, inputs)
    video, motion = sample(tiny_model, cond, latent_frames=tiny_cfg.latent_frames, steps=2, guidance=guidance,
                           text_scale=1.0, audio_scale=1.0, seed=3)
    generator = torch.Generator().manual_seed(3)
    v = torch.randn(inputs["video"].latents[:1].shape, generator=generator)
    m = torch.randn(inputs["motion"].latents[:1].shape, generator=generator)
    v[:, :, :1], m[:, :, :1] = cond.video_prefix, cond.motion_prefix
    timesteps = release_timesteps(2, 5.0)
    for t, next_t in zip(timesteps[:-1], timesteps[1:], strict=True):
        frame_t = torch.full((1, tiny_cfg.latent_frames), t.item())
        frame_t[:, 0] = 0
        with torch.no_grad():
            dv, dm = tiny_model(cond.text, Noisy(v, cond.video_back, frame_t), Noisy(m, cond.motion_back, frame_t),
                                cond.audio_windows, cond.face_mask)
        v, m = v - dv * (t - next_t) / 1000, m - dm * (t - next_t) / 1000
        v[:, :, :1], m[:, :, :1] = cond.video_prefix, cond.motion_prefix
    torch.testing.assert_close(video, v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(motion, m, rtol=1e-4, atol=1e-5)


def test_modes(tiny_cfg, tiny_model):
    inputs = make_inputs(tiny_cfg)
    cond = conditioning(tiny_cfg, inputs)
    frames = tiny_cfg.latent_frames
    video, motion = sample(tiny_model, cond, mode="motion", latent_frames=frames, steps=2)
    assert video is None and motion.shape == inputs["motion"].latents[:1].shape
    video, motion = sample(tiny_model, cond, mode="audio", latent_frames=frames, steps=2)
    assert motion is None and video.shape == inputs["video"].latents[:1].shape
    with pytest.raises(ValueError, match="driving_motion"):
        sample(tiny_model, cond, mode="pose", latent_frames=frames, steps=2)
    cond.driving_motion = inputs["motion"].latents[:1]
    video, motion = sample(tiny_model, cond, mode="pose", latent_frames=frames, steps=2)
    assert video.shape == inputs["video"].latents[:1].shape and torch.equal(motion, cond.driving_motion)
    with pytest.raises(ValueError, match="mode"):
        sample(tiny_model, cond, mode="dance", latent_frames=frames, steps=2)
    # Detection: one motion frame, no prefix, drawn from the reference at motion size alone.
    cond.motion_prefix = None
    _, detected = sample(tiny_model, cond, mode="motion", latent_frames=1, steps=2)
    assert detected.shape == inputs["motion"].latents[:1, :, :1].shape
