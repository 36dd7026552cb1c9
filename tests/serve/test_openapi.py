"""The documented contract (/openapi.json) as a real server serves it: the routes it offers, this
model's request and response with examples, and a real request and response that fit its schemas."""

import base64
import json

import httpx
import jsonschema
import pytest

from interactavatar.config import MODES
from interactavatar.serve.contract import FIELDS, OPTION_NAMES
from interactavatar.serve.protocols import OUTPUTS

pytestmark = pytest.mark.integration
V1 = "/v1/models/{model_name}:predict"
V2 = "/v2/models/{model_name}/infer"


@pytest.fixture(scope="module")
def document(server):
    response = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def validator(document: dict, schema_name: str) -> jsonschema.Draft202012Validator:
    """A validator for one of the document's schemas, its $refs resolved inside the document."""
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}",
                                            "components": document["components"]})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_contract_lists_the_served_routes_and_not_the_refused_ones(document):
    paths = document["paths"]
    for path in (V1, V2, "/v2/models/{model_name}", "/v2/health/ready", "/progress/{request_id}", "/ui", "/docs"):
        assert path in paths, path
    # The guard refuses the model repository API, explanations and model versions: not offered.
    assert not [p for p in paths if p.startswith("/v2/repository") or ":explain" in p or "/versions/" in p]
    model_names = {tuple(p["schema"].get("enum", ())) for ops in paths.values() for op in ops.values()
                   for p in op.get("parameters", []) if p["name"] == "model_name"}
    assert model_names == {("interactavatar",)}


def test_the_request_schemas_name_every_field_option_and_mode(document):
    schemas = document["components"]["schemas"]
    assert schemas["InteractAvatarInput"]["properties"]["name"]["enum"] == list(FIELDS)
    assert set(schemas["V1Instance"]["properties"]) == set(FIELDS)
    assert set(schemas["V1Instance"]["required"]) == {"image", "audio", "text"}
    options = schemas["GenerationOptions"]["properties"]
    assert set(options) == set(OPTION_NAMES)
    assert options["mode"]["enum"] == list(MODES)
    assert options["steps"]["maximum"] == 200  # the server's ServeLimits, not a copy
    assert schemas["InteractAvatarOutput"]["properties"]["name"]["enum"] == list(OUTPUTS)
    v2_body = document["paths"][V2]["post"]["requestBody"]["content"]
    assert set(v2_body) == {"application/json", "application/octet-stream"}
    assert "binary_data_size" in document["paths"][V2]["post"]["description"]
    for status in ("200", "400", "401", "413", "429", "503"):
        assert status in document["paths"][V2]["post"]["responses"], status


def test_every_example_fits_its_schema(document):
    checked = 0
    for path in (V1, V2):
        operation = document["paths"][path]["post"]
        bodies = [operation["requestBody"]] + [operation["responses"]["200"]]
        for body in bodies:
            media = body["content"]["application/json"]
            assert media["examples"], f"{path}: no example"
            schema_name = media["schema"]["$ref"].rsplit("/", 1)[1]
            for example in media["examples"].values():
                validator(document, schema_name).validate(example["value"])
                checked += 1
    binary_header = document["paths"][V2]["post"]["requestBody"]["content"]["application/octet-stream"]["examples"]
    for example in binary_header.values():
        validator(document, "InteractAvatarInferenceRequest").validate(example["value"])
        checked += 1
    assert checked == 5


def test_a_real_v2_request_and_its_response_fit_the_schemas(server, media, document):
    request = {"id": "openapi-check", "inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(media["image"])]},
        {"name": "audio", "shape": [1], "datatype": "BYTES", "data": [b64(media["audio"])]},
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["The man lifts the red cup"]},
        {"name": "options", "shape": [1], "datatype": "BYTES", "data": [json.dumps({"steps": 2, "return_motion": True})]},
    ]}
    validator(document, "InteractAvatarInferenceRequest").validate(request)
    response = httpx.post(f"{server.url}/v2/models/interactavatar/infer", json=request, timeout=300)
    assert response.status_code == 200, response.text
    body = response.json()
    validator(document, "InteractAvatarInferenceResponse").validate(body)
    assert {output["name"] for output in body["outputs"]} == {"video", "motion"}


def test_a_real_v1_request_and_its_response_fit_the_schemas(server, media, document):
    request = {"instances": [{"image": b64(media["image"]), "audio": b64(media["audio"]),
                              "text": "The man waves", "options": {"steps": 2, "mode": "audio"}}]}
    validator(document, "V1PredictRequest").validate(request)
    response = httpx.post(f"{server.url}/v1/models/interactavatar:predict", json=request, timeout=300)
    assert response.status_code == 200, response.text
    validator(document, "V1PredictResponse").validate(response.json())


def test_a_refusal_fits_the_error_schema(server, media, document):
    request = {"instances": [{"image": b64(media["image"]), "audio": b64(media["audio"]), "text": "wave",
                              "options": {"steps": 1000}}]}
    with pytest.raises(jsonschema.ValidationError):  # the contract already says so...
        validator(document, "V1PredictRequest").validate(request)
    response = httpx.post(f"{server.url}/v1/models/interactavatar:predict", json=request, timeout=60)
    assert response.status_code == 400  # ...and so does the server
    validator(document, "Error").validate(response.json())
    assert response.json()["error"].startswith("options.steps:")


def test_the_contract_and_the_pages_need_no_token_but_the_rest_does(guarded_server):
    for path in ("/openapi.json", "/docs", "/ui"):
        response = httpx.get(f"{guarded_server.url}{path}", timeout=30)
        assert response.status_code == 200, path
        if path != "/openapi.json":
            assert response.headers["content-type"].startswith("text/html")
            # The pages may load nothing from elsewhere (offline machines, clusters without egress).
            assert "default-src 'none'" in response.headers["content-security-policy"]
    for path in ("/progress/some-id", "/v2/models/interactavatar", "/metrics"):
        assert httpx.get(f"{guarded_server.url}{path}", timeout=30).status_code == 401, path
    progress = httpx.get(f"{guarded_server.url}/progress/some-id", headers=guarded_server.auth, timeout=30)
    assert progress.status_code == 404
    assert progress.json()["error"].startswith("progress/some-id:")
