"""The endpoint against requests that try to hurt it (issue #16, "Endpoint"), each over real HTTP
against a real model server: the model repository API, inputs whose headers declare far more than
their size, malformed v2 requests, clients that walk away or stall, per-client limits, the token.

No timing is asserted. A refusal "before decoding" shows in its message, which only the header
check writes; that the header check comes first is tests/serve/test_media_bounds.py's.
"""

import base64
import json
import struct

import httpx
import pytest
from helpers.media import mp4_bytes, nan_wav, png_bytes, wav_bytes, with_declared_rate
from helpers.model_server import read_response

from interactavatar.cli import main
from interactavatar.config import preset
from interactavatar.io.media import read_video

pytestmark = pytest.mark.integration
V1 = "/v1/models/interactavatar:predict"
V2 = "/v2/models/interactavatar/infer"
TINY = preset("tiny")
RUNNING, WAITING = "interactavatar_generations_running", "interactavatar_generations_waiting"
CANCELLED = 'interactavatar_generations_total{outcome="cancelled"}'
COMPLETED = 'interactavatar_generations_total{outcome="completed"}'


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v1_body(media, steps=2, **changes) -> dict:
    instance = {"image": b64(media["image"]), "audio": b64(media["audio"]), "text": "The man waves",
                "options": {"steps": steps}}
    return {"instances": [instance | changes]}


def binary_body(header_inputs: list[dict], payload: bytes) -> tuple[bytes, dict]:
    """A v2 binary body: the JSON header, then `payload`; with its two headers."""
    header = json.dumps({"inputs": header_inputs}).encode()
    return header + payload, {"Content-Type": "application/octet-stream",
                              "Inference-Header-Content-Length": str(len(header))}


def element(data: bytes, declared: int | None = None) -> bytes:
    """One BYTES element as the binary extension carries it; `declared` lies about its length."""
    return struct.pack("<I", len(data) if declared is None else declared) + data


def test_model_repository_api_is_refused_and_the_model_stays_up(server, media):
    """Nor are the routes kserve registers for what this model does not offer answered with a 5xx."""
    for path in ("/v2/repository/models/interactavatar/unload", "/v2/repository/models/interactavatar/load",
                 "/v2/repository/index"):
        response = httpx.post(server.url + path, timeout=30)
        assert response.status_code == 403 and response.json()["error"].startswith(path), response.text
    assert server.metrics()['interactavatar_requests_refused_total{reason="repository"}'] >= 3
    assert "model_repository_extension" not in httpx.get(server.url + "/v2").text
    # Routes kserve registers for what this model does not offer: 404, not kserve's 501.
    for method, path in (("POST", "/v1/models/interactavatar:explain"),
                         ("GET", "/v2/models/interactavatar/versions/1/ready")):
        response = httpx.request(method, server.url + path, json={}, timeout=30)
        assert response.status_code == 404 and response.json()["error"].startswith(path), response.text
    # The model is still there: it generates, and both probes say so.
    assert httpx.post(server.url + V1, json=v1_body(media), timeout=60).status_code == 200
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    assert httpx.get(server.url + "/v2/health/live").json() == {"live": True}


def costly_requests() -> dict:
    """Each: (changes to a good v1 instance, the field the error must start with, a phrase of the
    check that refused it). All but the NaN samples are refused from their headers."""
    return {
        "a 4 MHz WAV (64 KB)": ({"audio": b64(with_declared_rate(wav_bytes(2, 16000), 4_000_000))}, "audio",
                                "declares 4000000 Hz"),
        "nine channels": ({"audio": b64(wav_bytes(0.5, 16000, channels=9))}, "audio", "declares 9 channels"),
        "AIFF": ({"audio": b64(wav_bytes(0.5, 16000, format="AIFF"))}, "audio", "AIFF is not one of"),
        "NaN samples": ({"audio": b64(nan_wav())}, "audio", "NaN"),
        "a 10:1 image": ({"image": b64(png_bytes(20, 200))}, "image", "more elongated than"),
        "a 2050 x 2050 pose video": ({"pose_video": b64(mp4_bytes(2, 2050, 2050)), "options": {"mode": "pose"}},
                                     "pose_video", "declares 2050x2050"),
        "a 1501-frame pose video": ({"pose_video": b64(mp4_bytes(1501, 16, 16)), "options": {"mode": "pose"}},
                                    "pose_video", "declares 1501 frames"),
    }


def test_inputs_declaring_more_than_they_may_cost_are_refused_from_their_headers(server, media):
    for case, (changes, field, phrase) in costly_requests().items():
        response = httpx.post(server.url + V1, json=v1_body(media, **changes), timeout=60)
        error = response.json().get("error", "")
        assert response.status_code == 400 and error.startswith(field) and phrase in error, (case, response.text)


def test_odd_rates_and_large_pose_videos_are_served_at_a_bounded_cost(server, media, tmp_path):
    """44101 Hz resamples with a bounded filter (16000/44101 in lowest terms would need 882,021
    taps); a 1024 x 1024 pose video is decoded frame by frame at the motion size, only the frames
    the model uses. Both are served."""
    response = httpx.post(server.url + V1, json=v1_body(media, audio=b64(wav_bytes(0.5, 44101))), timeout=60)
    assert response.status_code == 200, response.text
    pose = mp4_bytes(40, 1024, 1024)
    response = httpx.post(server.url + V1, timeout=60, json=v1_body(
        media, pose_video=b64(pose), options={"mode": "pose", "steps": 2, "return_motion": True}))
    assert response.status_code == 200, response.text
    path = tmp_path / "motion.mp4"
    path.write_bytes(base64.b64decode(response.json()["predictions"][0]["motion"]))
    assert read_video(path)[0].shape == (TINY.num_frames, *TINY.motion_size, 3)


def test_malformed_v2_requests_and_options_are_4xx_naming_their_field(server, media):
    image, audio = media["image"], media["audio"]
    spec = lambda name, size, shape=(1,): {"name": name, "shape": list(shape), "datatype": "BYTES",  # noqa: E731
                                           "parameters": {"binary_data_size": size}}
    good = [element(image), element(audio), element(b"wave")]
    sizes = [len(e) for e in good]
    cases = {
        "a length prefix past the data": (
            [spec("image", sizes[0]), spec("audio", sizes[1]), spec("text", sizes[2])],
            element(image, declared=len(image) + 1000) + good[1] + good[2], "image"),
        "a length prefix short of the data": (
            [spec("image", sizes[0]), spec("audio", sizes[1]), spec("text", sizes[2])],
            good[0] + element(audio, declared=10) + good[2], "audio"),
        "no room for a length prefix": (
            [spec("image", sizes[0]), spec("audio", sizes[1]), spec("text", 2)], good[0] + good[1] + b"wa", "text"),
        "shape [1.0]": ([spec("image", sizes[0], (1.0,)), spec("audio", sizes[1]), spec("text", sizes[2])],
                        b"".join(good), "image"),
        "shape [1, 1, 1]": ([spec("image", sizes[0]), spec("audio", sizes[1], (1, 1, 1)), spec("text", sizes[2])],
                            b"".join(good), "audio"),
        "shape [true]": ([spec("image", sizes[0]), spec("audio", sizes[1]), spec("text", sizes[2], (True,))],
                         b"".join(good), "text"),
        "parameters a list": ([spec("image", sizes[0]) | {"parameters": [1]}], b"", "image.parameters"),
    }
    for case, (inputs, payload, field) in cases.items():
        content, headers = binary_body(inputs, payload)
        response = httpx.post(server.url + V2, content=content, headers=headers, timeout=30)
        assert response.status_code == 400 and response.json()["error"].startswith(field), (case, response.text)
    content, headers = binary_body([spec("image", sizes[0]), spec("audio", sizes[1]), spec("text", sizes[2])],
                                   b"".join(good))
    header_length = int(headers["Inference-Header-Content-Length"])
    for field, patch in (("id", {"id": 7}), ("parameters", {"parameters": "x"}),
                         ("outputs", {"outputs": [{"name": 1}]})):
        header = json.dumps(json.loads(content[:header_length]) | patch).encode()
        response = httpx.post(server.url + V2, content=header + content[header_length:], timeout=30,
                              headers=headers | {"Inference-Header-Content-Length": str(len(header))})
        assert response.status_code == 400 and response.json()["error"].startswith(field), (field, response.text)
    # The same shape over plain JSON.
    tensors = [{"name": "image", "shape": [1, 1, 1], "datatype": "BYTES", "data": [b64(image)]},
               {"name": "audio", "shape": [1], "datatype": "BYTES", "data": [b64(audio)]},
               {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["wave"]}]
    response = httpx.post(server.url + V2, json={"inputs": tensors}, timeout=30)
    assert response.status_code == 400 and response.json()["error"].startswith("image"), response.text

    height, width = 90, 120  # media["image"]
    for changes, field in (({"pose_video": b64(png_bytes()), "options": {"mode": "pose"}}, "pose_video"),
                           ({"options": {"face_box": [10, 10, width + 5, 40]}}, "options.face_box"),
                           ({"options": {"face_box": [10, height, 30, height + 1]}}, "options.face_box"),
                           ({"options": {"num_frames": TINY.num_frames + 4}}, "options.num_frames")):
        response = httpx.post(server.url + V1, json=v1_body(media, **changes), timeout=30)
        assert response.status_code == 400 and response.json()["error"].startswith(field), (changes, response.text)
    # The edges themselves are allowed: a box touching the image's border, the model's own count.
    options = {"steps": 2, "face_box": [0, 0, width, height], "num_frames": TINY.num_frames}
    assert httpx.post(server.url + V1, json=v1_body(media, options=options), timeout=60).status_code == 200


def test_clients_that_walk_away_free_their_places_and_stop_their_generation(server, media):
    """Three clients fill the server (one running, two queued: all its places) and walk away: the
    running generation is cancelled at a sampling step, the queued ones never start, and the next
    client is served, not told 429."""
    before = server.metrics()
    body = json.dumps(v1_body(media, steps=200)).encode()
    connections = [server.send_raw(V1, body, {"Content-Type": "application/json"}) for _ in range(3)]
    server.wait_for_metrics(lambda m: m[RUNNING] == 1 and m[WAITING] == 2, "one generation running, two waiting")
    for connection in connections:
        connection.close()
    after = server.wait_for_metrics(lambda m: m[RUNNING] == 0 and m[WAITING] == 0, "the places freed")
    assert after.get(CANCELLED, 0) == before.get(CANCELLED, 0) + 1
    assert after.get(COMPLETED, 0) == before.get(COMPLETED, 0)
    assert after["interactavatar_requests_abandoned_total"] == before["interactavatar_requests_abandoned_total"] + 3
    assert httpx.post(server.url + V1, json=v1_body(media), timeout=60).status_code == 200


def test_one_client_gets_at_most_its_share_of_the_server(guarded_server, media):
    body = json.dumps(v1_body(media, steps=200)).encode()
    long_one = guarded_server.send_raw(V1, body, {"Content-Type": "application/json"})
    guarded_server.wait_for_metrics(lambda m: m[RUNNING] == 1, "the first request running")
    response = httpx.post(guarded_server.url + V1, json=v1_body(media), headers=guarded_server.auth, timeout=30)
    assert response.status_code == 429 and response.json()["error"].startswith("client 127.0.0.1"), response.text
    assert response.headers["Retry-After"]
    long_one.close()
    guarded_server.wait_for_metrics(lambda m: m[RUNNING] == 0, "the abandoned generation stopped")
    response = httpx.post(guarded_server.url + V1, json=v1_body(media), headers=guarded_server.auth, timeout=60)
    assert response.status_code == 200, response.text


def test_stalled_bodies_are_answered_408_and_let_go(guarded_server, media):
    """Half a body, then nothing: the server answers 408 and closes the connection once the body
    timeout has passed (one at a time: this client's limit is one request)."""
    key = 'interactavatar_requests_refused_total{reason="body_timeout"}'
    before = guarded_server.metrics().get(key, 0)
    body = json.dumps(v1_body(media)).encode()
    for _ in range(2):
        connection = guarded_server.send_raw(V1, body, {"Content-Type": "application/json"}, send_bytes=len(body) // 2)
        status, answer, closed = read_response(connection)
        connection.close()
        assert status == 408 and json.loads(answer)["error"].startswith("body") and closed
    assert guarded_server.metrics()[key] == before + 2
    assert httpx.post(guarded_server.url + V1, json=v1_body(media), headers=guarded_server.auth,
                      timeout=60).status_code == 200


def test_a_token_guards_everything_but_the_probes(guarded_server, media):
    url = guarded_server.url
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(url + path).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": guarded_server.token}):
        for method, path in (("POST", V1), ("GET", "/metrics"), ("GET", "/v2/models/interactavatar"),
                             ("POST", "/v2/repository/models/interactavatar/unload")):
            response = httpx.request(method, url + path, headers=headers, json=v1_body(media), timeout=30)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"].startswith("authorization") and response.headers["WWW-Authenticate"]
    assert httpx.post(url + V1, json=v1_body(media), headers=guarded_server.auth, timeout=60).status_code == 200
    unload = httpx.post(url + "/v2/repository/models/interactavatar/unload", headers=guarded_server.auth)
    assert unload.status_code == 403


def test_a_server_reachable_from_the_network_needs_a_token_or_says_it_goes_without(tmp_path, capsys, monkeypatch):
    """Checked before anything loads: these never start a server."""
    monkeypatch.delenv("INTERACTAVATAR_AUTH_TOKEN_FILE", raising=False)
    assert main(["serve", "--model", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert "--auth-token-file" in capsys.readouterr().err
    # The cluster's way: the Secret's path in the environment, read at start.
    monkeypatch.setenv("INTERACTAVATAR_AUTH_TOKEN_FILE", str(tmp_path / "missing-token"))
    assert main(["serve", "--model", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert str(tmp_path / "missing-token") in capsys.readouterr().err
    (tmp_path / "token").write_text("   \n")
    monkeypatch.setenv("INTERACTAVATAR_AUTH_TOKEN_FILE", str(tmp_path / "token"))
    assert main(["serve", "--model", str(tmp_path), "--host", "127.0.0.1"]) == 2
    assert "holds no token" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--no-auth"]) == 2
    assert "--no-auth" in capsys.readouterr().err


def test_the_project_s_client_sends_the_token_from_its_file(guarded_server, media, tmp_path, monkeypatch):
    """`generate --endpoint` against a guarded endpoint: the token from --auth-token-file, or from
    the file named by INTERACTAVATAR_AUTH_TOKEN_FILE (the same variable the server reads)."""
    from interactavatar.inference.client import EndpointClient, EndpointError

    token_file = tmp_path / "token"
    token_file.write_text(guarded_server.token + "\n")
    monkeypatch.delenv("INTERACTAVATAR_AUTH_TOKEN_FILE", raising=False)
    with pytest.raises(EndpointError, match="HTTP 401"):
        EndpointClient(guarded_server.url).generate(media["image"], media["audio"], "wave", {"steps": 1})
    result = EndpointClient(guarded_server.url, token_file=token_file).generate(
        media["image"], media["audio"], "wave", {"steps": 1})
    assert result.videos["video"][4:8] == b"ftyp"
    monkeypatch.setenv("INTERACTAVATAR_AUTH_TOKEN_FILE", str(token_file))
    assert EndpointClient(guarded_server.url, protocol="v1").generate(
        media["image"], media["audio"], "wave", {"steps": 1}).videos["video"][4:8] == b"ftyp"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty: the endpoint's token file is empty"):
        EndpointClient(guarded_server.url, token_file=tmp_path / "empty")
