"""kserve's own InferenceRESTClient against a real server: the bug in kserve 0.21 that keeps it from
reading binary outputs (docs/upstream/kserve-binary-output.md), and both workarounds that
docs/serving-api.md documents. The second is the documented code itself, read from the document,
so that the page cannot drift from what works."""

import asyncio
import base64
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from kserve import InferenceRESTClient, RESTConfig
from kserve.errors import InferenceError
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from interactavatar.io.media import has_audio_stream, read_video

pytestmark = pytest.mark.integration
SERVING_API = Path(__file__).resolve().parents[2] / "docs" / "serving-api.md"


def request(media, *, binary_video: bool) -> InferRequest:
    """Inputs raw (binary extension), as kserve's client sends them; the video asked for raw or not."""
    inputs = []
    for name, value in (("image", media["image"]), ("audio", media["audio"]), ("text", b"The man lifts the red cup"),
                        ("options", b'{"steps": 2}')):
        tensor = InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([value], dtype=object), binary_data=True)
        inputs.append(tensor)
    outputs = [RequestedOutput("video", {"binary_data": True})] if binary_video else None
    return InferRequest(model_name="interactavatar", infer_inputs=inputs, request_outputs=outputs)


def kserve_infer(url: str, infer_request: InferRequest):
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=300))
    return asyncio.run(client.infer(url, infer_request, model_name="interactavatar"))


def documented_snippet(marker: str) -> dict:
    """The names the code block of docs/serving-api.md fenced as ```python <marker> defines."""
    match = re.search(rf"^( *)```python {marker}\n(.*?)^\1```", SERVING_API.read_text(), re.S | re.M)
    assert match, f"{SERVING_API}: no ```python {marker} block"
    namespace: dict = {}
    exec(compile(textwrap.dedent(match.group(2)), f"{SERVING_API}:{marker}", "exec"), namespace)  # noqa: S102
    return namespace


def assert_playable_video(tmp_path, data: bytes) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(data)
    frames = read_video(path)[0]
    assert len(frames) >= 1 and has_audio_stream(path)


def test_kserve_client_still_cannot_read_binary_outputs(server, media):
    """The upstream bug, as it stands in the pinned kserve: when this fails, kserve reads binary
    BYTES outputs and the workarounds can go."""
    with pytest.raises(InferenceError, match="using UTF-8"):
        kserve_infer(server.url, request(media, binary_video=True))


def test_workaround_kserve_client_with_base64_outputs(server, media, tmp_path):
    response = kserve_infer(server.url, request(media, binary_video=False))
    video = response.outputs[0]
    assert video.name == "video" and video.parameters["content_encoding"] == "base64"
    assert_playable_video(tmp_path, base64.b64decode(video.data[0]))


def test_workaround_documented_raw_outputs(server, media, tmp_path):
    infer_binary = documented_snippet("kserve-binary-outputs")["infer_binary"]
    outputs = infer_binary(server.url, request(media, binary_video=True))
    assert set(outputs) == {"video"}
    assert_playable_video(tmp_path, outputs["video"])
