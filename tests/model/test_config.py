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


@pytest.mark.parametrize(("name", "latent_grid", "token_grid", "latent_frames"), [
    ("tiny", (8, 8), (4, 4), 2),  # 64x64 video, 8x VAE, 2x2 patches; 5 frames
    ("demo", (16, 16), (8, 8), 5),  # 128x128, 8x, 2x2; 17 frames
    ("paper", (44, 88), (22, 44), 26),  # 704x1408, 16x, 2x2; 101 frames
])
def test_latent_and_token_grids(name, latent_grid, token_grid, latent_frames):
    cfg = preset(name)
    assert cfg.latent_grid == latent_grid and cfg.token_grid == token_grid
    assert cfg.latent_frames == latent_frames == cfg.latent_frames_for(cfg.num_frames)
    assert [cfg.latent_frames_for(n) for n in (1, 5, 9)] == [1, 2, 3]  # 1+4k frames -> 1+k
