"""The VAE stage: either architecture the config allows, and video steps on random crops.

`train vae --vae-kind wan` builds diffusers' AutoencoderKLWan at the preset's compression and
widths (`VAEConfig.as_kind`); what it writes loads as a WanVAE and a PIM stage trains on it.
`--video-crop PX` trains video steps on random PX x PX crops of whole frames.
"""

import pytest
import torch

from interactavatar.cli import main
from interactavatar.config import VAEConfig
from interactavatar.model.vae import load_vae
from interactavatar.model.wan_vae import WanVAE


def test_as_kind_keeps_the_compression():
    causal = VAEConfig(latent_channels=16, base_channels=16, channel_multipliers=(1, 2, 4),
                       temporal_downsample_levels=(0, 1))
    wan = causal.as_kind("wan")
    assert wan.kind == "wan" and wan.channel_multipliers == (1, 2, 2) and wan.num_res_blocks == 2
    assert (wan.spatial_compression, wan.temporal_compression) == (causal.spatial_compression,
                                                                   causal.temporal_compression)
    assert causal.as_kind("causal") is causal


def test_a_wan_vae_stage_feeds_the_pim_stage(train_dataset, tmp_path):
    vae_dir, pim_dir = tmp_path / "vae", tmp_path / "pim"
    common = ["--preset", "tiny", "--data", str(train_dataset), "--batch-size", "2", "--steps", "2"]
    assert main(["train", "vae", *common, "--out", str(vae_dir), "--vae-kind", "wan"]) == 0
    vae = load_vae(vae_dir)
    assert isinstance(vae, WanVAE)
    pixels = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    assert vae.decode(vae.encode(pixels)).abs().max() <= 1  # decode clamps; training decodes unclamped
    assert main(["train", "pim", *common, "--out", str(pim_dir), "--vae", str(vae_dir)]) == 0
    assert (pim_dir / "config.yaml").is_file()


def test_an_unknown_vae_kind_is_refused(train_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "vae", "--preset", "tiny", "--data", str(train_dataset), "--out", str(tmp_path / "v"),
              "--vae-kind", "vqgan"])
    assert "invalid choice: 'vqgan'" in capsys.readouterr().err


def test_video_steps_train_on_random_crops_and_motion_steps_on_whole_frames(tmp_path):
    from interactavatar.train.sampling import BatchLayout, StepRandomness
    from interactavatar.train.stages import StageSpec, _pixel_windows

    videos = torch.arange(4 * 3 * 5 * 88 * 88, dtype=torch.float32).reshape(4, 3, 5, 88, 88)
    motions, weights = torch.zeros(4, 3, 5, 32, 32), torch.ones(4, 1, 5, 32, 32)
    spec = StageSpec("vae", "tiny", tmp_path, tmp_path, vae_video_crop=40)
    layout = BatchLayout(2, 1, ranks=1, rank=0)
    corners = set()
    for step in (0, 3, 6):  # video steps (one video step, then two motion steps)
        randomness = StepRandomness.keyed(0, step, layout.samples(step, 0))
        batch = _pixel_windows(spec, (videos, motions, weights), layout, step, 0, randomness, torch.device("cpu"))
        assert batch["pixels"].shape == (2, 3, 5, 40, 40)
        for crop in batch["pixels"]:
            clip, rest = divmod(int(crop[0, 0, 0, 0]), 3 * 5 * 88 * 88)
            top, left = divmod(rest, 88)
            assert torch.equal(crop, videos[clip, :, :, top: top + 40, left: left + 40])  # a crop, not a resize
            corners.add((top, left))
    assert len(corners) > 1
    randomness = StepRandomness.keyed(0, 1, layout.samples(1, 0))
    motion = _pixel_windows(spec, (videos, motions, weights), layout, 1, 0, randomness, torch.device("cpu"))
    assert motion["pixels"].shape == (2, 3, 5, 32, 32) and motion["weights"].shape == (2, 1, 5, 32, 32)
    with pytest.raises(ValueError, match="--video-crop 36 must be a multiple of the VAE's spatial compression \\(8\\)"):
        StageSpec("vae", "tiny", tmp_path, tmp_path, vae_video_crop=36)
