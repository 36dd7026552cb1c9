"""`interactavatar model import-release` on a release folder built from the fixtures, then the whole
chain from it: the imported model computes the release's forward, and `generate`, `serve` and
`train joint` all take the directory.

The folder holds the DiT fixture's weights (two shards and an index, as the release ships them)
and, at the widths that DiT takes, random weights in the release's key layouts for the Wan2.2 VAE
and umT5, a byte-level tokenizer, and a tiny wav2vec2.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from helpers.datasets import TINY, make_dataset
from helpers.model_server import RunningServer
from helpers.release import Oracle, assert_close, release_stream
from PIL import Image
from safetensors.torch import save_file

from interactavatar.cli import main
from interactavatar.inference.client import EndpointClient
from interactavatar.io.media import read_video
from interactavatar.io.model_refs import Lineage, read_lineage
from interactavatar.model.bundle import load_bundle
from interactavatar.model.text import umt5_config_from_release, umt5_key_map
from interactavatar.model.wan_vae import WanVAE, release_names, vae_config_from_release
from interactavatar.model.weights import WEIGHTS_INDEX

pytestmark = [pytest.mark.release_parity, pytest.mark.integration, pytest.mark.slow]


def _transformer(folder, weights: dict) -> None:
    """The DiT weights as the release shards them: two files and their index."""
    keys = sorted(weights)
    names = ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"]
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    for name, part in zip(names, halves, strict=True):
        save_file({key: weights[key].contiguous() for key in part}, str(folder / name))
    weight_map = {key: name for name, part in zip(names, halves, strict=True) for key in part}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(the folder's files as import-release flags, the dit oracle)."""
    from transformers import ByT5Tokenizer, UMT5EncoderModel, Wav2Vec2Config, Wav2Vec2Model

    dit, vae_oracle = Oracle("dit"), Oracle("vae")
    model_kwargs = dit.config["model_kwargs"]
    audio = dit.config["module_overrides"]["audio_proj"]["kwargs"]
    root = tmp_path_factory.mktemp("release")
    (root / "transformer").mkdir()
    _transformer(root / "transformer", dit.weights)
    torch.manual_seed(0)
    latent = model_kwargs["in_dim"]
    vae_kwargs = {**vae_oracle.config["WanVAE_kwargs"], "z_dim": latent}
    statistics = {"latent_mean": torch.randn(latent).tolist(), "latent_std": (1 + torch.rand(latent)).tolist()}
    vae = WanVAE(vae_config_from_release(vae_kwargs, **statistics))
    ours = vae.model.state_dict()
    names = release_names(vae_oracle.weights)  # the release's key names do not depend on the widths
    torch.save({key: ours[name] for name, key in names.items()}, root / "Wan2.2_VAE.pth")
    tokenizer = ByT5Tokenizer()
    tokenizer.save_pretrained(str(root / "tokenizer"))
    sizes = {"vocab": len(tokenizer), "dim": model_kwargs["text_dim"], "dim_attn": model_kwargs["text_dim"],
             "dim_ffn": 2 * model_kwargs["text_dim"], "num_heads": 2, "num_layers": 2, "num_buckets": 8}
    text = UMT5EncoderModel(umt5_config_from_release(sizes)).state_dict()
    torch.save({key: text[targets[0]] for key, targets in umt5_key_map(2).items()}, root / "umt5.pth")
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=audio["channels"], num_hidden_layers=audio["blocks"],
                                 num_attention_heads=2, intermediate_size=2 * audio["channels"],
                                 conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                 num_conv_pos_embedding_groups=2)).save_pretrained(str(root / "wav2vec2"))
    config = {**model_kwargs, "audio_proj": audio, "vae": {"kwargs": vae_kwargs, **statistics},
              "sizes": {"video_size": [352, 352], "motion_size": [128, 128], "num_frames": 5, "size_rule": "fixed"}}
    (root / "release.json").write_text(json.dumps(config))
    flags = ["--transformer", root / "transformer", "--vae", root / "Wan2.2_VAE.pth", "--umt5", root / "umt5.pth",
             "--tokenizer", root / "tokenizer", "--wav2vec2", root / "wav2vec2", "--release-config", root / "release.json"]
    return [str(flag) for flag in flags], dit


@pytest.fixture(scope="module")
def imported(release, tmp_path_factory):
    flags, _ = release
    out = tmp_path_factory.mktemp("imported") / "release-model"
    assert main(["model", "import-release", *flags, "--out", str(out), "--max-shard-gb", "0.001"]) == 0
    return out


def test_the_imported_model_computes_the_releases_forward(imported, release):
    _, dit = release
    assert (imported / WEIGHTS_INDEX).is_file() and len(list(imported.glob("model-*.safetensors"))) > 1
    assert {p.name for p in imported.iterdir()} >= {"config.yaml", "vae", "text_encoder", "audio_encoder"}
    bundle = load_bundle(imported)
    inputs, case = dit.inputs, dit.config["cases"]["a2mv"]["forward_kwargs"]
    back = dit.config["model_kwargs"]["back_append_frame"]
    stream = lambda latents, t: release_stream(latents, t, case["prefix_len"], back)  # noqa: E731

    with torch.no_grad():
        video, motion = bundle.model(inputs["context"][None], stream(inputs["x"], inputs["t_750"]),
                                     stream(inputs["motion"], inputs["t_750"]), inputs["audio_embedding"])
    tolerance = {k: dit.config["suggested_tolerance"][k] for k in ("atol", "rtol")}
    assert_close("a2mv.video", video[0], dit.outputs["a2mv.video"][:, :-back], **tolerance)
    assert_close("a2mv.motion", motion[0], dit.outputs["a2mv.motion"][:, :-back], **tolerance)


def _media(folder):
    image, speech = folder / "ref.png", folder / "speech.wav"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(image)
    t = np.arange(16000) / 16000
    soundfile.write(speech, 0.3 * np.sin(2 * np.pi * 200 * t), 16000)
    return image, speech


def test_generate_and_serve_take_the_imported_model(imported, tmp_path):
    image, speech = _media(tmp_path)
    out = tmp_path / "out.mp4"
    assert main(["generate", "--model", str(imported), "--image", str(image), "--audio", str(speech), "--text",
                 "The man lifts the red cup", "-o", str(out), "--steps", "2"]) == 0
    assert read_video(out)[0].shape == (5, 352, 352, 3)
    server = RunningServer(imported, tmp_path / "server.log")
    try:
        server.wait_ready()
        client = EndpointClient(server.url)
        result = client.generate(image.read_bytes(), speech.read_bytes(), "The man lifts the red cup", {"steps": 2})
        client.close()
    finally:
        server.stop()
    (tmp_path / "served.mp4").write_bytes(result.videos["video"])
    assert read_video(tmp_path / "served.mp4")[0].shape == (5, 352, 352, 3)


def test_joint_training_starts_from_the_imported_model(imported, tmp_path):
    data = make_dataset(tmp_path / "data", num_clips=4, seed=11, spec=TINY)
    out = tmp_path / "joint"
    # Its own process, as a user runs it: training ends by tearing down torch.distributed.
    result = subprocess.run(
        [sys.executable, "-m", "interactavatar.cli", "train", "joint", "--preset", "tiny", "--data", str(data),
         "--init", str(imported), "--out", str(out),
         "--steps", "2", "--batch-size", "2", "--checkpoint-every", "2", "--log-every", "1"],
        capture_output=True, text=True, timeout=600,
        env=os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    assert result.returncode == 0, result.stderr[-3000:]
    trained = load_bundle(out)
    assert {p.name for p in out.iterdir()} >= {"text_encoder", "audio_encoder", "vae"}
    before = load_bundle(imported).model.state_dict()
    after = trained.model.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before), "two steps changed no weight"
    # The release's own aligner is trained further, not replaced by a fresh zero one.
    aligner = [name for name in before if name.startswith("aligner.")]
    assert aligner and any(before[name].abs().sum() > 0 for name in aligner)
    assert read_lineage(imported) == Lineage("release") and read_lineage(out) == Lineage("model", str(imported))
