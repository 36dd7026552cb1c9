"""The dual-stream DiT against the release's own forward (fixture family `dit`): the release's
weights through our key map, loaded strictly, every case and every recorded intermediate within
the fixture's tolerance. Every size comes from the fixture's config.json."""

import pytest
import torch
from helpers.release import Oracle, assert_close, release_model, release_stream

from interactavatar.config import preset
from interactavatar.model import InteractAvatar
from interactavatar.model.release import config_from_release, state_dict_from_release

pytestmark = pytest.mark.release_parity


@pytest.fixture(scope="module")
def oracle():
    return Oracle("dit")


@pytest.fixture(scope="module")
def model(oracle):
    overrides = oracle.config["module_overrides"]
    assert (overrides["blocks.*.audio_cross_attn"]["kwargs"]["encoder_hidden_states_dim"]
            == overrides["audio_proj"]["kwargs"]["output_dim"])
    return release_model(oracle)


def _run(model, oracle, case: str, hooks: dict | None = None):
    kwargs = oracle.config["cases"][case]["forward_kwargs"]
    back = oracle.config["model_kwargs"]["back_append_frame"]
    prefix = kwargs["prefix_len"]
    take = lambda expression: oracle.inputs[expression.split("'")[1]]  # noqa: E731  "inputs['x']" -> x
    audio = None if kwargs["audio_embedding"] is None else take(kwargs["audio_embedding"])
    (text,) = [take(item) for item in kwargs["context_list"]]
    with torch.no_grad():
        return model(text[None], video=release_stream(take(kwargs["x"]), take(kwargs["t"]), prefix, back),
                     motion=release_stream(take(kwargs["motion"]), take(kwargs["motion_t"]), prefix, back),
                     audio_windows=audio, face_mask=None, skip_block=None)


@pytest.mark.parametrize("case", ["a2mv", "ap2v", "a2mv_null", "a2mv_noaudio"])
def test_every_case_matches_the_release(model, oracle, case):
    assert case in oracle.config["cases"]
    tolerance = oracle.config["suggested_tolerance"]
    back = oracle.config["model_kwargs"]["back_append_frame"]
    video, motion = _run(model, oracle, case)
    # The release also returns the back frames' output, which its sampler overwrites; we drop them.
    assert_close(f"{case}.video", video[0], oracle.outputs[f"{case}.video"][:, :-back], **_tol(tolerance))
    assert_close(f"{case}.motion", motion[0], oracle.outputs[f"{case}.motion"][:, :-back], **_tol(tolerance))


def _tol(tolerance: dict) -> dict:
    return {"atol": tolerance["atol"], "rtol": tolerance["rtol"]}


def test_every_recorded_intermediate_matches_the_release(model, oracle):
    recorded = {name.removeprefix("a2mv.intermediate."): tensor for name, tensor in oracle.outputs.items()
                if name.startswith("a2mv.intermediate.")}
    assert recorded, "the fixture records no intermediates"
    seen: dict[str, torch.Tensor] = {}

    def keep(name, which="out"):
        def hook(module, args, output):
            seen[name] = (args[0] if which == "in" else output).detach()
        return hook

    aim, pim = model.aim, model.pim
    handles = [aim.text_embedding.register_forward_hook(keep("text_embedding.out")),
               pim.text_embedding.register_forward_hook(keep("motion_text_embedding.out")),
               aim.time_embedding.register_forward_hook(keep("time_embedding.out")),
               pim.time_embedding.register_forward_hook(keep("motion_time_embedding.out")),
               aim.audio_projection.register_forward_hook(keep("audio_proj.out")),
               aim.head.register_forward_hook(keep("head.out")),
               pim.head.register_forward_hook(keep("motion_head.out")),
               model.aligner.register_forward_hook(lambda m, a, out: seen.__setitem__(f"aligner.{a[0]}", out))]
    for index in range(len(aim.blocks)):
        for prefix, blocks in (("blocks", aim.blocks), ("motion_blocks", pim.blocks)):
            handles.append(blocks[index].register_forward_hook(keep(f"{prefix}.{index}.in", "in")))
            handles.append(blocks[index].register_forward_hook(keep(f"{prefix}.{index}.out")))
    try:
        _run(model, oracle, "a2mv")
    finally:
        for handle in handles:
            handle.remove()

    tolerance = _tol(oracle.config["suggested_tolerance"])
    video_tokens = oracle.config["token_counts"]["video"]
    back_tokens = video_tokens // oracle.config["token_counts"]["video_grid_thw"][0]
    checked = []
    for name, expected in recorded.items():
        if name.startswith("zero_motion_proj_blocks."):
            index = int(name.split(".")[1])
            # The release projects every frame and drops the back frame's value when adding it.
            actual, expected = seen[f"aligner.{index}"][:, :-back_tokens], expected[:, :-back_tokens]
        elif name in ("time_embedding.out", "motion_time_embedding.out"):
            # Ours is per frame (every token of a frame has its frame's timestep): spread to tokens.
            per_frame = seen[name]
            actual = per_frame.repeat_interleave(expected.shape[1] // per_frame.shape[1], dim=1)
        else:
            actual = seen[name]
        assert_close(name, actual, expected, **tolerance)
        checked.append(name)
    assert len(checked) == len(recorded)


def test_the_5b_checkpoint_maps_key_for_key():
    """Every one of the release's 1,930 5B keys maps onto ours with its shape, and ours are all
    filled: checked on the meta device, so no memory is spent."""
    from helpers.release import oracle_root

    listing = (oracle_root() / "release-5b-keys.txt").read_text().splitlines()
    shapes = {key: [int(n) for n in shape.strip("[]").split(",")]
              for key, shape in (line.split("\t") for line in listing if line and not line.startswith("#"))}
    release = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    with torch.device("meta"):
        network = InteractAvatar(config_from_release({}, {}, base=preset("paper")))
    converted = state_dict_from_release(release, network.state_dict(), "release-5b-keys.txt")
    assert len(converted) == len(release) == len(network.state_dict())
    total = sum(tensor.numel() for tensor in release.values())
    assert sum(p.numel() for p in network.parameters()) == total
    header = listing[0]
    assert f"{total:,}" in header, f"the listing's header states another parameter count: {header[:200]}"


def test_a_foreign_or_misshapen_key_is_named(model):
    ours = model.state_dict()
    with pytest.raises(ValueError, match="'encoder.layer.0.weight' is not a key"):
        state_dict_from_release({"encoder.layer.0.weight": torch.zeros(1)}, ours, "foreign.safetensors")
    with pytest.raises(ValueError, match="foreign.safetensors: 'head.head.weight' has shape"):
        state_dict_from_release({"head.head.weight": torch.zeros(3, 3)}, ours, "foreign.safetensors")
    with pytest.raises(ValueError, match="not in the checkpoint"):
        state_dict_from_release({}, ours, "empty.safetensors")
