"""Our DiT stream against the DiT benchmark's reference, diffusers' WanTransformer3DModel
(benchmarks/wan_reference.py builds it and maps our weights onto it)."""

import pytest
import torch

pytest.importorskip("diffusers")

from benchmarks.wan_reference import build_wan, to_wan_state_dict  # noqa: E402
from interactavatar.config import StreamConfig  # noqa: E402
from interactavatar.model.stream import DiTStream  # noqa: E402


def test_our_stream_computes_what_diffusers_wan_computes():
    """With our weights loaded into diffusers and no reference frame (so the RoPE positions agree),
    both networks give the same velocity: the DiT benchmark compares one function twice."""
    torch.manual_seed(0)
    cfg = StreamConfig(dim=64, num_layers=2, num_heads=2, ffn_dim=128, freq_dim=32)
    # text_len = the rows given: diffusers attends the text as given, with no padding.
    ours = DiTStream(cfg, latent_channels=16, text_dim=48, text_len=5).eval()
    torch.nn.init.normal_(ours.head.proj.weight, std=0.1)
    theirs = build_wan(cfg, 16, 48).eval()
    theirs.load_state_dict(to_wan_state_dict(ours), strict=True)
    latents, text, t = torch.randn(2, 16, 3, 8, 8), torch.randn(2, 5, 48), torch.tensor([300.0, 700.0])
    with torch.no_grad():
        expected = theirs(latents, t, text, return_dict=False)[0]
        actual = ours(latents, latents[:, :, :0], t[:, None].expand(2, 3), text)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
