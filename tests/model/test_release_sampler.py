"""The release's sampling loop (fixture family `sampler`): our "release" sampler on the release's
weights reproduces its timestep grid, its bad-CFG schedule, the latents after step 1 and the final
latents. Every size and argument comes from the fixture's config.json."""

import pytest
import torch
from helpers.release import Oracle, assert_close, release_model

from interactavatar.model.audio import window_features
from interactavatar.model.flow import Conditioning, release_timesteps, sample

pytestmark = pytest.mark.release_parity
MODES = {"a2mv": "interact", "ap2v": "pose"}


@pytest.fixture(scope="module")
def oracle():
    return Oracle("sampler")


@pytest.fixture(scope="module")
def model(oracle):
    return release_model(oracle)


def test_timestep_grid_is_the_releases_exactly(oracle):
    args = oracle.config["sampler_args"]
    grid = release_timesteps(len(oracle.config["timesteps"]) - 1, args["shift"], args["num_timesteps"])
    assert grid.dtype == torch.float32
    assert torch.equal(grid, oracle.outputs["timesteps"])


def test_audio_windows_are_the_releases(oracle):
    window = oracle.config["module_overrides"]["audio_proj"]["kwargs"]["seq_len"]
    windows = window_features(oracle.inputs["audio_features"], window)
    # The release casts the windows to bf16 and back; the fixture's features are bf16 already.
    tolerance = oracle.config["suggested_tolerance"]
    assert_close("audio_embs", windows.bfloat16().float()[None], oracle.outputs["audio_embs"],
                 atol=tolerance["atol"], rtol=tolerance["rtol"])


@pytest.mark.parametrize("case", ["a2mv", "a2mv_nobadcfg", "ap2v"])
def test_sampling_loop_matches_the_release(model, oracle, case):
    spec, args, inputs, outputs = oracle.config["cases"][case], oracle.config["sampler_args"], oracle.inputs, oracle.outputs
    back = oracle.config["model_kwargs"]["back_append_frame"]
    steps = len(spec["skip_block"])
    expected_skips = outputs[f"{case}.skip_block"].bool().tolist()
    assert expected_skips == spec["skip_block"]
    timesteps = release_timesteps(steps, args["shift"], args["num_timesteps"])
    assert [bool(spec["bad_cfg"]) and t > args["bad_thres"] for t in timesteps[:-1].tolist()] == expected_skips

    cond = Conditioning(
        text=inputs["context"][None], negative_text=inputs["context_null"][None],
        audio_windows=outputs["audio_embs"],
        video_prefix=inputs["cond_image_latent"], video_back=inputs["obj_image_latent"],
        motion_prefix=inputs["cond_dw_img_latent"], motion_back=inputs["small_img_latent"],
        driving_motion=inputs["pose_latents"] if MODES[spec["mode"]] == "pose" else None)
    after_first: dict[str, torch.Tensor] = {}

    def keep_first(step, steps, video, motion):
        if step == 1:
            after_first.update(video=video.clone(), motion=None if motion is None else motion.clone())

    frames = outputs["latent.init"].shape[2] - back
    video, motion = sample(
        model, cond, mode=MODES[spec["mode"]], latent_frames=frames, steps=steps, shift=args["shift"], guidance="release",
        text_scale=args["text_guide_scale"], skip_block=oracle.config["skip_block_index"] if spec["bad_cfg"] else None,
        skip_above=args["bad_thres"], noise=(inputs["noise"][:, :, :frames], inputs["motion_noise"][:, :, :frames]),
        on_step=keep_first)

    suggested = oracle.config["suggested_tolerance"]
    step_tolerance = {"atol": suggested["atol"], "rtol": suggested["rtol"]}
    # The README's final tolerance: 5x guidance over the steps amplifies a port's 1e-6 per pass.
    final_tolerance = {"atol": max(5e-4, suggested["atol"]), "rtol": suggested["rtol"]}
    assert_close(f"{case}.latent.after_step_1", after_first["video"],
                 outputs[f"{case}.latent.after_step_1"][:, :, :frames], **step_tolerance)
    assert_close(f"{case}.latent.final", video, outputs[f"{case}.latent.final"][:, :, :frames], **final_tolerance)
    if MODES[spec["mode"]] == "pose":
        # The release decodes its fixed pose sequence, not the motion latents it keeps updating.
        assert_close("ap2v.cond_pose_sequence", motion, outputs["ap2v.cond_pose_sequence"][:, :, :frames], atol=0, rtol=0)
    else:
        assert_close(f"{case}.latent_motion.after_step_1", after_first["motion"],
                     outputs[f"{case}.latent_motion.after_step_1"][:, :, :frames], **step_tolerance)
        assert_close(f"{case}.latent_motion.final", motion, outputs[f"{case}.latent_motion.final"][:, :, :frames],
                     **final_tolerance)
