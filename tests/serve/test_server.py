"""A real model server on 127.0.0.1 answering real HTTP: round trips, bad requests, load."""

import base64
import json
import threading
import time

import httpx
import numpy as np
import pytest
from helpers.media import png_bytes, png_header_only, wav_bytes
from kserve.protocol.infer_type import InferInput, InferRequest

from interactavatar.config import preset
from interactavatar.inference.client import EndpointClient, EndpointError
from interactavatar.io.media import has_audio_stream, read_video

pytestmark = pytest.mark.integration
V1 = "/v1/models/interactavatar:predict"
V2 = "/v2/models/interactavatar/infer"
TINY = preset("tiny")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decoded(tmp_path, name: str, data: bytes):
    path = tmp_path / f"{name}.mp4"
    path.write_bytes(data)
    return read_video(path)[0], has_audio_stream(path)


def v1_instance(media, **changes):
    instance = {"image": b64(media["image"]), "audio": b64(media["audio"]), "text": "The man lifts the red cup",
                "options": {"steps": 2}}
    return instance | changes


def v2_tensor(name, value, datatype="BYTES", shape=(1,)):
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": [value]}


def v2_body(media, *extra, drop=()):
    tensors = [v2_tensor("image", b64(media["image"])), v2_tensor("audio", b64(media["audio"])),
               v2_tensor("text", "wave")]
    return {"inputs": [t for t in tensors if t["name"] not in drop] + list(extra)}


def binary_request(tensors: dict[str, bytes], outputs=None) -> tuple[bytes, int]:
    inputs = []
    for name, value in tensors.items():
        tensor = InferInput(name=name, shape=[1], datatype="BYTES")
        tensor.set_data_from_numpy(np.array([value], dtype=object), binary_data=True)
        inputs.append(tensor)
    return InferRequest(model_name="interactavatar", infer_inputs=inputs, request_outputs=outputs).to_rest()


def test_v1_round_trip_decodes_to_video_with_audio_and_motion(server, media, tmp_path):
    body = {"instances": [v1_instance(media, options={"steps": 2, "seed": 3, "return_motion": True})]}
    response = httpx.post(server.url + V1, json=body, timeout=60)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    frames, with_audio = decoded(tmp_path, "video", base64.b64decode(prediction["video"]))
    assert frames.shape == (TINY.num_frames, *TINY.video_size, 3) and with_audio
    motion, _ = decoded(tmp_path, "motion", base64.b64decode(prediction["motion"]))
    assert motion.shape == (TINY.num_frames, *TINY.motion_size, 3)
    assert prediction["num_frames"] == TINY.num_frames and prediction["fps"] == 25
    assert prediction["total_s"] >= prediction["sample_s"] > 0


def test_v2_binary_round_trip_matches_v1_for_the_same_seed(server, media, tmp_path):
    options = {"steps": 2, "seed": 3, "return_motion": True}
    client = EndpointClient(server.url, protocol="v2")
    result = client.generate(media["image"], media["audio"], "The man lifts the red cup", options)
    v1 = EndpointClient(server.url, protocol="v1").generate(media["image"], media["audio"],
                                                            "The man lifts the red cup", options)
    frames, with_audio = decoded(tmp_path, "v2", result.videos["video"])
    assert frames.shape == (TINY.num_frames, *TINY.video_size, 3) and with_audio
    # The same generation; libx264 is not bit-reproducible between encodes (mean difference about
    # 1 here, against about 15 for another seed), so the frames agree up to encoding noise.
    assert np.abs(frames.astype(int) - decoded(tmp_path, "v1", v1.videos["video"])[0]).mean() < 5
    assert decoded(tmp_path, "motion", result.videos["motion"])[0].shape[1:3] == TINY.motion_size
    assert result.metadata["num_frames"] == TINY.num_frames


def test_v2_binary_request_sends_raw_media(media):
    body, json_length = binary_request({"image": media["image"], "audio": media["audio"], "text": b"wave"})
    header = json.loads(body[:json_length])
    assert [t["parameters"]["binary_data_size"] for t in header["inputs"][:2]] == [
        len(media["image"]) + 4, len(media["audio"]) + 4]  # 4-byte length prefix per element
    assert len(body) < json_length + len(media["image"]) + len(media["audio"]) + 20


def test_v2_json_request_gets_base64_outputs(server, media, tmp_path):
    body = v2_body(media, v2_tensor("options", json.dumps({"steps": 2})))
    response = httpx.post(server.url + V2, json=body, timeout=60)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "video" and output["parameters"]["content_encoding"] == "base64"
    assert decoded(tmp_path, "video", base64.b64decode(output["data"][0]))[1]


def test_motion_and_pose_modes(server, media, tmp_path):
    client = EndpointClient(server.url)
    motion_only = client.generate(media["image"], media["audio"], "wave", {"mode": "motion", "steps": 2})
    assert set(motion_only.videos) == {"motion"}
    posed = client.generate(media["image"], media["audio"], "wave", {"mode": "pose", "steps": 2}, media["pose_video"])
    assert decoded(tmp_path, "posed", posed.videos["video"])[0].shape[0] == TINY.num_frames


BAD_V1 = {
    "image: malformed base64": ({"image": "not base64!"}, "image"),
    "image: not an image": ({"image": b64(b"hello, not a picture")}, "image"),
    "image: absurd size": ({"image": b64(png_header_only(20000, 20000))}, "image"),
    "image: wrong type": ({"image": 12}, "image"),
    "image: missing": ({"image": None}, "image"),
    "audio: not audio": ({"audio": b64(png_bytes())}, "audio"),
    "audio: too long": ({"audio": b64(wav_bytes(seconds=6, rate=8000))}, "audio"),
    "audio: too short": ({"audio": b64(wav_bytes(seconds=0.01, rate=8000))}, "audio"),
    "text: missing": ({"text": None}, "text"),
    "text: wrong type": ({"text": 123}, "text"),
    "text: empty": ({"text": "  "}, "text"),
    "steps: absurd": ({"options": {"steps": 100000}}, "options.steps"),
    "steps: wrong type": ({"options": {"steps": "many"}}, "options.steps"),
    "seed: boolean": ({"options": {"seed": True}}, "options.seed"),
    "num_frames: absurd": ({"options": {"num_frames": 100000}}, "options.num_frames"),
    "num_frames: not 1+4k": ({"options": {"num_frames": 6}}, "options.num_frames"),
    "text_scale: negative": ({"options": {"text_scale": -1}}, "options.text_scale"),
    "face_box: inverted": ({"options": {"face_box": [50, 50, 10, 10]}}, "options.face_box"),
    "mode: unknown": ({"options": {"mode": "dance"}}, "options.mode"),
    "options: unknown": ({"options": {"colour": "red"}}, "options.colour"),
    "options: not an object": ({"options": [1, 2]}, "options"),
    "return_motion: not a bool": ({"options": {"return_motion": "yes"}}, "options.return_motion"),
    "pose_video: missing for pose": ({"options": {"mode": "pose"}}, "pose_video"),
    "pose_video: not a video": ({"options": {"mode": "pose"}, "pose_video": b64(b"nope")}, "pose_video"),
    "object_image: not an image": ({"object_image": b64(b"nope")}, "object_image"),
    "object_image: absurd size": ({"object_image": b64(png_header_only(20000, 20000))}, "object_image"),
    "pose_image: not an image": ({"pose_image": b64(b"nope")}, "pose_image"),
    "field: unknown": ({"colour": "red"}, "instances[0].colour"),
}


def test_every_bad_request_is_refused_naming_its_field_and_serving_goes_on(server, media):
    refused = {}
    for case, (changes, field) in BAD_V1.items():
        instance = {k: v for k, v in v1_instance(media, **changes).items() if v is not None}
        response = httpx.post(server.url + V1, json={"instances": [instance]}, timeout=30)
        refused[case] = (response.status_code, response.json().get("error", ""))
        assert response.status_code == 400 and response.json()["error"].startswith(field), (case, refused[case])
    for body, field in (({"instances": [v1_instance(media)] * 2}, "instances"), ({"instances": "x"}, "instances"),
                        ([1, 2], "")):
        response = httpx.post(server.url + V1, json=body, timeout=30)
        assert response.status_code == 400 and field in response.text, (body, response.text)
    assert httpx.post(server.url + V1, content=b"{not json", timeout=30).status_code == 400
    # ... and a good request still succeeds afterwards.
    assert httpx.post(server.url + V1, json={"instances": [v1_instance(media)]}, timeout=60).status_code == 200


def test_bad_v2_requests_are_refused_naming_their_field(server, media):
    json_cases = [
        (v2_body(media, drop=("image",)) | {"inputs": [v2_tensor("image", 1.5, "FP32")] + v2_body(media)["inputs"][1:]},
         "image"),
        ({"inputs": [v2_tensor("image", b64(media["image"]), shape=(2,))] + v2_body(media)["inputs"][1:]}, "image"),
        (v2_body(media, v2_tensor("colour", "red")), "inputs.colour"),
        (v2_body(media, v2_tensor("options", "{steps: 2")), "options"),
        (v2_body(media, drop=("text",)), "text"),
        (v2_body(media) | {"outputs": [{"name": "depth"}]}, "outputs.depth"),
        (v2_body(media, v2_tensor("options", json.dumps({"mode": "motion"}))) | {"outputs": [{"name": "video"}]},
         "outputs.video"),
    ]
    for body, field in json_cases:
        response = httpx.post(server.url + V2, json=body, timeout=30)
        assert response.status_code == 400 and response.json()["error"].startswith(field), (field, response.text)
    # The request schema itself (kserve's pydantic model): 422 naming the location.
    response = httpx.post(server.url + V2, json={"inputs": "image"}, timeout=30)
    assert response.status_code == 422 and "inputs" in response.text

    body, json_length = binary_request({"image": media["image"], "audio": media["audio"], "text": b"\xff\xfe"})
    octet = {"Content-Type": "application/octet-stream"}
    binary_cases = [
        (body, {"Inference-Header-Content-Length": str(json_length)}, "text"),
        (body, {"Inference-Header-Content-Length": str(json_length - 3)}, "inference-header-content-length"),
        (body, {}, "inference-header-content-length"),
        (body[:-5], {"Inference-Header-Content-Length": str(json_length)}, "text"),
        (body + b"junk", {"Inference-Header-Content-Length": str(json_length)}, "body"),
    ]
    for content, headers, field in binary_cases:
        response = httpx.post(server.url + V2, content=content, headers=octet | headers, timeout=30)
        assert response.status_code == 400 and response.json()["error"].startswith(field), (field, response.text)
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_oversized_bodies_get_413_declared_or_chunked(server):
    response = httpx.post(server.url + V1, content=b"x" * (3 * 2**20), timeout=30)
    assert response.status_code == 413 and "body" in response.json()["error"]

    def chunks():
        for _ in range(3 * 16):
            yield b"y" * 2**16

    response = httpx.post(server.url + V1, content=chunks(), timeout=30)
    assert response.status_code == 413
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_unknown_model_is_404(server, media):
    response = httpx.post(server.url + "/v1/models/other:predict", json={"instances": [v1_instance(media)]})
    assert response.status_code == 404


def test_concurrent_requests_queue_up_to_the_bound_then_get_429_and_health_stays_responsive(server, media):
    """One slot + two queue places: of four simultaneous long generations three run (one after
    another) and one is refused at once; health checks answer while they run."""
    statuses, errors = [], []

    def one_request():
        try:
            EndpointClient(server.url).generate(media["image"], media["audio"], "wave", {"steps": 80})
            statuses.append(200)
        except EndpointError as err:
            statuses.append(err.status)
            errors.append(str(err))

    threads = [threading.Thread(target=one_request) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    health_latencies = []
    while any(t.is_alive() for t in threads):
        started = time.perf_counter()
        assert httpx.get(server.url + "/v2/health/ready", timeout=5).status_code == 200
        health_latencies.append(time.perf_counter() - started)
        time.sleep(0.2)
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 200, 429], errors
    assert "retry" in errors[0]
    assert health_latencies and max(health_latencies) < 1.0, health_latencies


def test_object_and_pose_images_are_decoded_for_the_pipeline(media):
    """The release's obj_img keeps its alpha (the pipeline pastes it on white by it); the pose image
    is RGB; both are optional."""
    import io

    import numpy as np
    from PIL import Image

    from interactavatar.serve.contract import GenerationOptions, ServeLimits, build_request

    cut_out = io.BytesIO()
    Image.fromarray(np.zeros((10, 12, 4), np.uint8)).save(cut_out, format="PNG")
    base = {"image": media["image"], "audio": media["audio"]}
    request = build_request({**base, "object_image": cut_out.getvalue(), "pose_image": png_bytes(20, 30)}, "hi",
                            GenerationOptions(), ServeLimits(), TINY)
    assert request.object_image.shape == (10, 12, 4) and request.pose_image.shape == (20, 30, 3)
    plain = build_request(base, "hi", GenerationOptions(), ServeLimits(), TINY)
    assert plain.object_image is None and plain.pose_image is None


def test_v2_metadata_lists_the_tensors_and_the_binary_extension(server):
    """What an Open Inference Protocol client reads before it sends anything."""
    import httpx

    from interactavatar.serve.contract import FIELDS

    assert httpx.get(server.url + "/v2", timeout=30).json()["extensions"] == ["binary_tensor_data"]
    metadata = httpx.get(server.url + "/v2/models/interactavatar", timeout=30).json()
    assert metadata["name"] == "interactavatar"
    assert metadata["inputs"] == [{"name": name, "datatype": "BYTES", "shape": [1]} for name in FIELDS]
    assert metadata["outputs"] == [{"name": name, "datatype": "BYTES", "shape": [1]} for name in ("video", "motion")]
