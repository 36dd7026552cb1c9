"""A v2 request's progress (GET /progress/{id}) on a real server: the sampler's steps as they happen,
one id per request in the server, and no entry once the request has left."""

import base64
import json

import httpx
import pytest

pytestmark = pytest.mark.integration
STEPS = 200  # the most a request may ask for: long enough on the tiny model to be watched mid-way


def v2_json(media, request_id: str, steps: int) -> bytes:
    def tensor(name, value):
        return {"name": name, "shape": [1], "datatype": "BYTES", "data": [value]}

    return json.dumps({"id": request_id, "inputs": [
        tensor("image", base64.b64encode(media["image"]).decode()),
        tensor("audio", base64.b64encode(media["audio"]).decode()),
        tensor("text", "The man lifts the red cup"), tensor("options", json.dumps({"steps": steps}))]}).encode()


def test_progress_follows_the_sampler_and_ends_with_the_request(server, media):
    request_id = "progress-check-1"
    progress_url = f"{server.url}/progress/{request_id}"
    cancelled_key = 'interactavatar_generations_total{outcome="cancelled"}'
    cancelled = server.metrics().get(cancelled_key, 0)
    connection = server.send_raw("/v2/models/interactavatar/infer", v2_json(media, request_id, STEPS),
                                 {"Content-Type": "application/json"})
    try:
        def sampling(metrics) -> bool:
            response = httpx.get(progress_url, timeout=10)
            return response.status_code == 200 and response.json()["step"] >= 1

        server.wait_for_metrics(sampling, f"{request_id} reported at a sampling step")
        progress = httpx.get(progress_url, timeout=10).json()
        assert progress["id"] == request_id
        assert progress["state"] in ("sampling", "finishing")
        assert progress["steps"] == STEPS
        assert 1 <= progress["step"] <= STEPS

        # A second request under the same id is refused while the first is in the server.
        twin = httpx.post(f"{server.url}/v2/models/interactavatar/infer", content=v2_json(media, request_id, 1),
                          headers={"Content-Type": "application/json"}, timeout=60)
        assert twin.status_code == 400
        assert twin.json()["error"].startswith("id:")
    finally:
        connection.close()  # the client walks away: the guard cancels the generation
    server.wait_for_metrics(lambda m: m.get(cancelled_key, 0) > cancelled
                            and httpx.get(progress_url, timeout=10).status_code == 404,
                            "the abandoned generation cancelled and its progress gone")
