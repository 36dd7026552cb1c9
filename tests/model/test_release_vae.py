"""The Wan2.2 VAE (diffusers' AutoencoderKLWan behind `WanVAE`) against the release's own
`vae2_2.py` (fixture family `vae`): the release's weights through our key map, loaded strictly;
encode (normalised posterior mean) and decode (clamped, and unclamped) within the fixture's
tolerance. Every size comes from the fixture's config.json."""

import dataclasses

import pytest
import torch
from helpers.release import Oracle, assert_close

from interactavatar.config import WAN22_LATENT_MEAN, WAN22_LATENT_STD, VAEConfig, preset
from interactavatar.model.vae import CausalVAE, build_vae, load_vae
from interactavatar.model.wan_vae import (
    WanVAE,
    autoencoder_kwargs,
    autoencoder_kwargs_from_release,
    vae_config_from_release,
    wan_vae_state_dict_from_release,
)

pytestmark = pytest.mark.release_parity


@pytest.fixture(scope="module")
def oracle():
    return Oracle("vae")


@pytest.fixture(scope="module")
def cfg(oracle):
    config = oracle.config
    return vae_config_from_release(config["WanVAE_kwargs"], oracle.inputs["latents_mean"],
                                   oracle.inputs["latents_std"], patch_size=config["patch_size"])


@pytest.fixture(scope="module")
def vae(oracle):
    config = oracle.config
    return WanVAE.from_release(oracle.weights, config["WanVAE_kwargs"], oracle.inputs["latents_mean"],
                               oracle.inputs["latents_std"], config["patch_size"]).eval()


def _tolerance(oracle) -> dict:
    return {"atol": oracle.config["tolerance"]["atol"], "rtol": oracle.config["tolerance"]["rtol"]}


def test_config_follows_the_release_sizes(oracle, cfg, vae):
    config = oracle.config
    assert [cfg.temporal_compression, cfg.spatial_compression, cfg.spatial_compression] == config["compression"]
    assert autoencoder_kwargs(cfg)["in_channels"] == config["in_channels_after_patchify"]
    assert len(oracle.weights) == config["num_tensors"]
    assert sum(p.numel() for p in vae.parameters()) == config["num_params"]


def test_encode_matches_the_release(oracle, vae):
    with torch.no_grad():
        latent = vae.encode(oracle.inputs["video"])
        mean, _ = vae.encode_distribution(oracle.inputs["video"])
    assert list(latent.shape[1:]) == oracle.config["shapes"]["latent"]
    # The release encodes one video without a batch axis.
    assert_close("latent", latent[0], oracle.outputs["latent"], **_tolerance(oracle))
    if "mu_raw" in oracle.outputs:
        assert_close("mu_raw", mean[0], oracle.outputs["mu_raw"], **_tolerance(oracle))


def test_decode_matches_the_release(oracle, vae):
    latent = oracle.outputs["latent"][None]
    with torch.no_grad():
        decoded = vae.decode(latent)
        unclamped = vae.decode(latent, clamp=False)
    assert list(decoded.shape[1:]) == oracle.config["shapes"]["decoded"]
    assert_close("decoded", decoded[0], oracle.outputs["decoded"], **_tolerance(oracle))
    assert decoded.abs().max() <= 1
    if "decoded_unclamped" in oracle.outputs:
        assert_close("decoded_unclamped", unclamped[0], oracle.outputs["decoded_unclamped"], **_tolerance(oracle))


def test_bad_frame_counts_and_latent_widths_are_named(oracle, vae):
    video = oracle.inputs["video"]
    tc = vae.cfg.temporal_compression
    with pytest.raises(ValueError, match=f"{video.shape[2] + 1} frames"):
        vae.encode(torch.cat([video, video[:, :, :1]], dim=2))
    with pytest.raises(ValueError, match="channels"):
        vae.decode(torch.zeros(1, vae.cfg.latent_channels + 1, 1 + tc, 2, 2))


def test_converter_maps_every_release_key(oracle, cfg):
    converted = wan_vae_state_dict_from_release(oracle.weights)
    with torch.device("meta"):
        expected = WanVAE(cfg).model.state_dict()
    assert set(converted) == set(expected)
    assert all(converted[k].shape == expected[k].shape for k in expected)


def test_converter_refuses_keys_the_release_does_not_have(oracle, cfg):
    weights = dict(oracle.weights)
    weights["encoder.bogus.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="encoder.bogus.weight"):
        wan_vae_state_dict_from_release(weights)
    with torch.device("meta"):
        fresh = WanVAE(cfg)
    with pytest.raises(ValueError, match="encoder.bogus.weight"):
        fresh.load_release_state_dict(weights)


def test_loading_refuses_missing_surplus_and_misshapen_tensors(oracle, cfg):
    with torch.device("meta"):
        fresh = WanVAE(cfg)
    dropped = sorted(oracle.weights)[0]
    (dropped_name,) = wan_vae_state_dict_from_release({dropped: oracle.weights[dropped]})
    with pytest.raises(ValueError, match=f"missing.*{dropped_name}"):
        fresh.load_release_state_dict({k: v for k, v in oracle.weights.items() if k != dropped})

    # A key of the release's layout that this config does not have (one level too many).
    levels = len(cfg.channel_multipliers)
    surplus = f"decoder.upsamples.{levels}.upsamples.0.residual.0.gamma"
    with pytest.raises(ValueError, match=f"unexpected.*{surplus}"):
        fresh.load_release_state_dict({**oracle.weights, surplus: torch.ones(1)})

    key = "encoder.conv1.weight"
    with pytest.raises(ValueError, match=f"{key}.*shape"):
        fresh.load_release_state_dict({**oracle.weights, key: oracle.weights[key][:1]})


def test_save_and_load_round_trip(oracle, vae, tmp_path):
    vae.save_pretrained(tmp_path / "vae")
    loaded = load_vae(tmp_path / "vae")
    assert isinstance(loaded, WanVAE) and loaded.cfg == vae.cfg
    video = oracle.inputs["video"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(video), vae.encode(video), rtol=0, atol=0)
    with pytest.raises(ValueError, match="kind 'wan'"):
        CausalVAE.from_pretrained(tmp_path / "vae")
    (tmp_path / "vae" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_vae(tmp_path / "vae")


def test_release_checkpoint_file_loads(oracle, vae, tmp_path):
    torch.save(dict(oracle.weights), tmp_path / "Wan2.2_VAE.pth")
    loaded = WanVAE.from_release_checkpoint(tmp_path / "Wan2.2_VAE.pth", oracle.config["WanVAE_kwargs"],
                                            oracle.inputs["latents_mean"], oracle.inputs["latents_std"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(oracle.inputs["video"]), vae.encode(oracle.inputs["video"]),
                                   rtol=0, atol=0)


def test_causal_folders_still_load_as_causal_vaes(tmp_path):
    causal = build_vae(preset("tiny").vae)
    causal.save_pretrained(tmp_path / "vae")
    assert isinstance(load_vae(tmp_path / "vae"), CausalVAE)


def test_paper_preset_is_the_release_vae_and_builds_on_meta():
    cfg = preset("paper").vae
    assert cfg == vae_config_from_release({})  # the release's 5B WanVAE_ and its 48 statistics
    assert (cfg.kind, cfg.latent_channels, cfg.spatial_compression, cfg.temporal_compression) == ("wan", 48, 16, 4)
    assert autoencoder_kwargs(cfg) == autoencoder_kwargs_from_release({})
    with torch.device("meta"):
        vae = build_vae(cfg)
    assert isinstance(vae, WanVAE)
    parameters = sum(p.numel() for p in vae.parameters())
    assert all(p.is_meta for p in vae.parameters())
    assert 700e6 < parameters < 710e6, parameters  # 704,688,668


def test_paper_preset_matches_the_fixtures_record_of_the_release_5b(oracle):
    reference = oracle.config.get("release_5B_kwargs_for_reference")
    if reference is None:
        pytest.skip("this fixture set records no 5B kwargs")
    assert vae_config_from_release(reference) == preset("paper").vae


def test_vae_config_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="kind"):
        VAEConfig(kind="vqgan")
    with pytest.raises(ValueError, match="per-channel latent_mean needs kind 'wan'"):
        VAEConfig(latent_channels=2, latent_mean=(0.0, 1.0))
    with pytest.raises(ValueError, match="latent_std has 47 values for 48"):
        dataclasses.replace(preset("paper").vae, latent_std=WAN22_LATENT_STD[:47])
    with pytest.raises(ValueError, match="unknown WanVAE_ argument"):
        vae_config_from_release({"dim": 8, "wings": 2})
    with pytest.raises(ValueError, match="temperal_downsample"):
        vae_config_from_release({"temperal_downsample": [True]})
    with pytest.raises(ValueError, match="z_dim"):
        vae_config_from_release({"z_dim": 4}, latent_mean=WAN22_LATENT_MEAN)
