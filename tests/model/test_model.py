"""Properties of the dual-stream network that a wrong implementation would break."""

import pytest
import torch
from helpers.model import make_inputs, randomize_heads

from interactavatar.config import preset
from interactavatar.model import InteractAvatar, Noisy
from interactavatar.model.aim import AudioCrossAttention
from interactavatar.model.dit import grid_positions, rope_angles, rope_split


def test_output_shapes_for_every_stream_combination(tiny_cfg, tiny_model):
    inputs = make_inputs(tiny_cfg)
    video, motion = tiny_model(**inputs)
    assert video.shape == inputs["video"].latents.shape
    assert motion.shape == inputs["motion"].latents.shape
    video_only, none = tiny_model(**{**inputs, "motion": None})
    assert none is None and video_only.shape == video.shape
    none, motion_only = tiny_model(inputs["text"], motion=inputs["motion"])
    assert none is None and motion_only.shape == motion.shape


def test_zero_initialised_aligner_makes_aim_independent_of_pim(tiny_cfg, tiny_model):
    inputs = make_inputs(tiny_cfg)
    other_motion = make_inputs(tiny_cfg, seed=1)["motion"]
    with torch.no_grad():
        video_a, motion_a = tiny_model(**inputs)
        video_b, motion_b = tiny_model(**{**inputs, "motion": other_motion})
        video_alone, _ = tiny_model(**{**inputs, "motion": None})
        assert not torch.allclose(motion_a, motion_b)
        torch.testing.assert_close(video_a, video_b, rtol=0, atol=0)
        torch.testing.assert_close(video_a, video_alone, rtol=0, atol=0)
        # The same check with a trained aligner must see PIM: the test can fail.
        for projection in tiny_model.aligner.projections:
            projection.weight.normal_(std=0.1)
        video_c, _ = tiny_model(**inputs)
        video_d, _ = tiny_model(**{**inputs, "motion": other_motion})
    assert not torch.allclose(video_c, video_d)


def test_aligner_leaves_reference_tokens_alone(tiny_cfg, tiny_model):
    inputs = make_inputs(tiny_cfg)
    model = tiny_model
    for projection in model.aligner.projections:
        projection.weight.data.normal_(std=0.1)
    _, motion_inputs = model.pim.embed(*inputs["motion"], inputs["text"])
    xv, video_inputs = model.aim.embed(*inputs["video"], inputs["text"])
    xm = torch.randn(2, motion_inputs.frames * motion_inputs.tokens_per_frame + motion_inputs.tokens_per_frame, 32)
    injection = model.aligner(0, torch.zeros_like(xm), xm, motion_inputs, video_inputs)
    reference_start = video_inputs.frames * video_inputs.tokens_per_frame
    assert injection.shape == xv.shape
    assert injection[:, reference_start:].abs().sum() == 0
    assert injection[:, :reference_start].abs().sum() > 0


@pytest.mark.parametrize("mode", ["residual", "last", "add"])
def test_injection_modes_build_and_run(mode):
    cfg = preset("tiny")
    cfg.injection = mode
    model = randomize_heads(InteractAvatar(cfg))
    for projection in model.aligner.projections:
        projection.weight.data.normal_(std=0.1)
    video, _ = model(**make_inputs(cfg))
    assert torch.isfinite(video).all()
    assert len(model.aligner.projections) == (1 if mode == "last" else cfg.aim.num_layers)


def test_zero_face_mask_removes_the_audio(tiny_cfg, tiny_model):
    inputs = make_inputs(tiny_cfg)
    other_audio = torch.randn_like(inputs["audio_windows"])
    with torch.no_grad():
        silent = {**inputs, "face_mask": torch.zeros_like(inputs["face_mask"])}
        torch.testing.assert_close(
            tiny_model(**silent)[0], tiny_model(**{**silent, "audio_windows": other_audio})[0], rtol=0, atol=0
        )
        assert not torch.allclose(tiny_model(**inputs)[0], tiny_model(**{**inputs, "audio_windows": other_audio})[0])


def test_audio_of_latent_frame_k_reaches_only_frame_k_tokens(tiny_cfg, tiny_model):
    inputs = make_inputs(tiny_cfg)
    xv, video_inputs = tiny_model.aim.embed(*inputs["video"], inputs["text"])
    attention = AudioCrossAttention(32, 2, tiny_cfg.audio.feature_dim)
    frames, per_frame = video_inputs.frames, video_inputs.tokens_per_frame
    audio_tokens = torch.randn(2, frames, tiny_cfg.audio.tokens_per_frame, tiny_cfg.audio.feature_dim)
    with torch.no_grad():
        base = attention(xv, audio_tokens, inputs["face_mask"], video_inputs)
        for k in range(frames):
            changed = audio_tokens.clone()
            changed[:, k] += torch.randn_like(changed[:, k])
            delta = (attention(xv, changed, inputs["face_mask"], video_inputs) - base).abs().sum(dim=(0, 2))
            touched = (delta > 0).nonzero().flatten()
            assert touched.min() >= k * per_frame and touched.max() < (k + 1) * per_frame
            assert len(touched) == per_frame
        # The back frame's tokens attend to all-zero audio tokens, as in the release: each gets the
        # same constant, whatever the audio.
        back = base[:, frames * per_frame :]
        assert back.abs().sum() > 0 and torch.equal(back, back[:, :1].expand_as(back))


def test_audio_projection_groups_video_frames_into_latent_frames(tiny_cfg, tiny_model):
    projection = tiny_model.aim.audio_projection
    windows = make_inputs(tiny_cfg)["audio_windows"]
    with torch.no_grad():
        base = projection(windows)
        assert base.shape == (2, tiny_cfg.latent_frames, tiny_cfg.audio.tokens_per_frame, tiny_cfg.audio.feature_dim)
        changed = windows.clone()
        changed[:, 3] += 1.0  # video frame 3 belongs to latent frame 1 (frames 1..4)
        delta = (projection(changed) - base).abs().sum(dim=(0, 2, 3))
    assert delta[0] == 0 and delta[1] > 0


def test_reference_frame_sits_at_temporal_index_minus_one(tiny_cfg, tiny_model):
    inputs = make_inputs(tiny_cfg)
    _, video_inputs = tiny_model.aim.embed(*inputs["video"], inputs["text"])
    h, w = video_inputs.grid
    positions = grid_positions(video_inputs.frames, h, w, 1)
    reference = positions[video_inputs.frames * h * w :]
    assert (reference[:, 0] == -1).all()
    assert (reference[:, 1:] == positions[: h * w, 1:]).all()
    head_dim = tiny_cfg.aim.head_dim
    expected = rope_angles(torch.tensor([[-1, 0, 0]]), head_dim)[0]
    torch.testing.assert_close(video_inputs.rope[video_inputs.frames * h * w], expected)
    # temporal channels rotate backwards for the reference frame
    temporal = rope_split(head_dim)[0] // 2
    assert (video_inputs.rope[video_inputs.frames * h * w, :temporal] <= 0).all()
    assert (video_inputs.rope[video_inputs.frames * h * w, :temporal] < 0).any()


def test_rope_split_follows_wan():
    assert rope_split(128) == (44, 42, 42)
    assert sum(rope_split(16)) == 16


def test_reference_tokens_use_timestep_zero(tiny_cfg, tiny_model):
    inputs = make_inputs(tiny_cfg, timestep=900.0)
    _, video_inputs = tiny_model.aim.embed(*inputs["video"], inputs["text"])
    clean = make_inputs(tiny_cfg, timestep=0.0)
    _, clean_inputs = tiny_model.aim.embed(*clean["video"], clean["text"])
    torch.testing.assert_close(video_inputs.time_mod[:, -1], clean_inputs.time_mod[:, -1])
    assert not torch.allclose(video_inputs.time_mod[:, 0], clean_inputs.time_mod[:, 0])


def test_pim_motion_output_ignores_aim(tiny_cfg, tiny_model):
    inputs = make_inputs(tiny_cfg)
    other_video = make_inputs(tiny_cfg, seed=3)["video"]
    with torch.no_grad():
        _, motion_a = tiny_model(**inputs)
        _, motion_b = tiny_model(**{**inputs, "video": other_video})
    torch.testing.assert_close(motion_a, motion_b, rtol=0, atol=0)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_cfg):
    torch.manual_seed(0)
    model = randomize_heads(InteractAvatar(tiny_cfg)).train()
    inputs = make_inputs(tiny_cfg)

    def gradients():
        model.zero_grad()
        video, motion = model(**inputs)
        (video.square().mean() + motion.square().mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.set_gradient_checkpointing(True)
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], msg=name)


def test_paper_preset_builds_on_meta_with_about_11_billion_parameters():
    with torch.device("meta"):
        model = InteractAvatar(preset("paper"))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    # Wan2.2-TI2V-5B per stream, the audio attention and projection, the aligner.
    assert 4.9e9 < count(model.pim) < 5.1e9
    assert 10.9e9 < count(model) < 11.5e9
    assert count(model.aligner) == 30 * 3072 * 3072


def test_bf16_autocast_forward_is_finite(tiny_cfg, tiny_model):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        video, motion = tiny_model(**make_inputs(tiny_cfg))
    assert torch.isfinite(video.float()).all() and torch.isfinite(motion.float()).all()


def test_motion_and_video_frame_counts_must_match(tiny_cfg, tiny_model):
    inputs = make_inputs(tiny_cfg)
    motion = inputs["motion"]
    short = Noisy(motion.latents[:, :, :1], motion.back, motion.timesteps[:, :1])
    with pytest.raises(ValueError, match="latent frames"):
        tiny_model(**{**inputs, "motion": short})


def test_aim_never_sees_the_last_pim_blocks_residual(tiny_cfg):
    """The release's timing: AIM block i gets PIM block i-1's residual, so the last PIM block
    changes the motion but not the video."""
    model = randomize_heads(InteractAvatar(tiny_cfg))
    for projection in model.aligner.projections:
        projection.weight.data.normal_(std=0.1)
    inputs = make_inputs(tiny_cfg)
    with torch.no_grad():
        video, motion = model(**inputs)
        for parameter in model.pim.blocks[-1].parameters():
            parameter.add_(torch.randn_like(parameter))
        changed_video, changed_motion = model(**inputs)
        assert torch.equal(video, changed_video)
        assert not torch.allclose(motion, changed_motion)
        for parameter in model.pim.blocks[-2].parameters():
            parameter.add_(torch.randn_like(parameter))
        assert not torch.allclose(video, model(**inputs)[0])


def test_skipped_block_is_skipped_by_both_streams(tiny_cfg):
    model = randomize_heads(InteractAvatar(tiny_cfg))
    inputs = make_inputs(tiny_cfg)
    with torch.no_grad():
        skipped = model(**inputs, skip_block=0)
        for stream in (model.aim, model.pim):
            for parameter in stream.blocks[0].parameters():
                parameter.add_(torch.randn_like(parameter))
        again = model(**inputs, skip_block=0)
        assert all(torch.equal(a, b) for a, b in zip(skipped, again, strict=True))
        assert not torch.allclose(skipped[0], model(**inputs)[0])
