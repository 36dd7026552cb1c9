import pytest
import torch

from interactavatar.config import preset
from interactavatar.model.vae import CausalVAE


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return CausalVAE(preset("tiny").vae).eval()


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_round_trip_shapes_for_one_plus_4k_frames(vae, frames):
    pixels = torch.rand(1, 3, frames, 64, 32) * 2 - 1
    latents = vae.encode(pixels)
    assert latents.shape == (1, 4, 1 + (frames - 1) // 4, 8, 4)
    decoded = vae.decode(latents)
    assert decoded.shape == pixels.shape and torch.isfinite(decoded).all()


def test_encoder_is_causal_in_time(vae):
    pixels = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    changed = pixels.clone()
    changed[:, :, 5:] = torch.rand_like(changed[:, :, 5:])
    with torch.no_grad():
        a, b = vae.encode(pixels), vae.encode(changed)
    # video frames 0..4 make latent frames 0 and 1; they must not see frames 5..8
    torch.testing.assert_close(a[:, :, :2], b[:, :, :2], rtol=0, atol=0)
    assert not torch.allclose(a[:, :, 2], b[:, :, 2])


def test_a_single_image_is_a_one_frame_video(vae):
    image = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    video = torch.cat([image, torch.rand(1, 3, 4, 32, 32)], dim=2)
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(image), vae.encode(video)[:, :, :1], rtol=0, atol=0)


def test_bad_frame_counts_and_sizes_are_named(vae):
    with pytest.raises(ValueError, match="6 frames"):
        vae.encode(torch.zeros(1, 3, 6, 32, 32))
    with pytest.raises(ValueError, match="divisible by 8"):
        vae.encode(torch.zeros(1, 3, 5, 36, 32))


def test_save_and_load_round_trip(vae, tmp_path):
    vae.save_pretrained(tmp_path / "vae")
    loaded = CausalVAE.from_pretrained(tmp_path / "vae")
    pixels = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(pixels), loaded.encode(pixels), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        (tmp_path / "vae" / "model.safetensors").unlink()
        CausalVAE.from_pretrained(tmp_path / "vae")


def test_vae_trains(vae):
    """Gradients reach every parameter and a few steps lower the reconstruction error."""
    vae.train()
    pixels = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        mean, _ = vae.encode_distribution(pixels)
        loss = (vae.decode(mean) - pixels).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in vae.parameters())
    assert losses[-1] < losses[0]
