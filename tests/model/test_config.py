import dataclasses

import pytest

from interactavatar.config import InteractAvatarConfig, preset


@pytest.mark.parametrize("name", ["tiny", "demo", "paper"])
def test_presets_round_trip_through_yaml(name, tmp_path):
    cfg = preset(name)
    cfg.save(tmp_path / "config.yaml")
    assert InteractAvatarConfig.load(tmp_path / "config.yaml") == cfg


def test_paper_preset_is_wan22_ti2v_5b_per_stream():
    cfg = preset("paper")
    assert (cfg.aim.dim, cfg.aim.num_layers, cfg.aim.num_heads, cfg.aim.ffn_dim) == (3072, 30, 24, 14336)
    assert cfg.aim.head_dim == 128
    assert cfg.vae.latent_channels == 48
    assert (cfg.vae.temporal_compression, cfg.vae.spatial_compression) == (4, 16)
    assert cfg.text.dim == 4096
    assert (cfg.audio.num_layers, cfg.audio.feature_dim, cfg.audio.tokens_per_frame) == (12, 768, 32)
    assert min(cfg.video_size) == 704 and min(cfg.motion_size) == 256


def test_bad_config_files_name_the_field(tmp_path):
    path = tmp_path / "config.yaml"
    data = preset("tiny").to_dict()
    data["aim"]["wings"] = 2
    import yaml

    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"config.yaml.*aim.*wings"):
        InteractAvatarConfig.load(path)
    data = preset("tiny").to_dict()
    data["num_frames"] = 6
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="num_frames=6"):
        InteractAvatarConfig.load(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        InteractAvatarConfig.load(path)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_streams_must_pair_layer_for_layer():
    cfg = preset("tiny").to_dict()
    cfg["pim"]["num_layers"] = 3
    with pytest.raises(ValueError, match="num_layers"):
        InteractAvatarConfig.from_dict(cfg)


@pytest.mark.parametrize(("name", "latent_grid", "token_grid", "motion_token_grid", "latent_frames"), [
    ("tiny", (11, 11), (11, 11), (4, 4), 2),  # 88x88 video, 32x32 motion, 8x VAE, 1x1 patches; 5 frames
    ("demo", (22, 22), (11, 11), (4, 4), 5),  # 176x176, 64x64, 8x, 2x2; 17 frames
    ("paper", (44, 88), (22, 44), (8, 16), 26),  # 704x1408, 256x512, 16x, 2x2; 101 frames
])
def test_latent_and_token_grids(name, latent_grid, token_grid, motion_token_grid, latent_frames):
    cfg = preset(name)
    assert cfg.latent_grid == latent_grid and cfg.token_grid == token_grid
    assert cfg.motion_token_grid == motion_token_grid  # every preset keeps the release's 2.75 exactly
    assert cfg.latent_frames == latent_frames == cfg.latent_frames_for(cfg.num_frames)
    assert [cfg.latent_frames_for(n) for n in (1, 5, 9)] == [1, 2, 3]  # 1+4k frames -> 1+k


def test_a_config_off_the_releases_grid_ratio_is_refused():
    with pytest.raises(ValueError, match=r"height token grids are 4 \(motion_size\) and 8 \(video_size\)"):
        dataclasses.replace(preset("demo"), video_size=(128, 176))


@pytest.mark.parametrize(("height", "width", "motion", "video"), [
    (720, 1280, (256, 512), (704, 1408)),  # 16:9, the release's example
    (1280, 720, (512, 256), (1408, 704)),  # portrait: the long side is the height
    (1080, 1440, (256, 384), (704, 1056)),  # 4:3: 341 rounds to 384
    (600, 600, (256, 256), (704, 704)),
])
def test_the_release_size_rule_keeps_the_grids_at_exactly_2_75(height, width, motion, video):
    cfg = preset("paper").sizes_for(height, width)
    assert (cfg.motion_size, cfg.video_size) == (motion, video)
    spatial = cfg.vae.spatial_compression * cfg.aim.patch_size[1]
    motion_grid = (motion[0] // spatial, motion[1] // spatial)
    assert all(v == 2.75 * m for v, m in zip(cfg.token_grid, motion_grid, strict=True))


def test_a_fixed_size_preset_crops_every_input_to_its_size():
    cfg = preset("demo")
    assert cfg.size_rule == "fixed" and cfg.sizes_for(100, 300) is cfg
    with pytest.raises(ValueError, match="size_rule"):
        dataclasses.replace(cfg, size_rule="stretch")
