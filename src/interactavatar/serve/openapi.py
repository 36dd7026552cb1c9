"""The endpoint's contract as an OpenAPI 3.1 document: `GET /openapi.json` (rendered at /docs, read by
the web page at /ui).

kserve's FastAPI app already serves /openapi.json, generated from its routes, but that document
cannot say what this model takes: its v1 predict reads a raw request (no body schema at all), its
v2 infer accepts any Open Inference Protocol request and answers an empty schema, and it lists
routes the guard refuses (the model repository API, explanations, model versions). This module
keeps FastAPI's document for what it gets right (the paths, their parameters, the health and
metadata responses) and writes in what only this server knows: the request and response of both
protocols for this model, with examples; the binary extension's layout; the errors; the progress
route. The schemas take their names and bounds from the contract (contract.FIELDS, config.MODES,
protocols.OUTPUTS, the server's own ServeLimits); tests/serve/test_openapi.py checks the options
against contract.OPTION_NAMES and a real request and response against the schemas.
"""

from __future__ import annotations

from importlib.metadata import version

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER

from interactavatar.config import MODEL_NAME, MODES
from interactavatar.serve.contract import FIELDS, MEDIA_FIELDS, ServeLimits
from interactavatar.serve.guard import REPOSITORY_PREFIX, UNSERVED
from interactavatar.serve.progress import STATES
from interactavatar.serve.protocols import OUTPUTS

V1_PREDICT = "/v1/models/{model_name}:predict"
V2_INFER = "/v2/models/{model_name}/infer"

MEDIA_DESCRIPTIONS = {
    "image": "the reference image: PNG or JPEG",
    "audio": "the speech: WAV, FLAC or OGG, 8 to 192 kHz, 1 to 8 channels (resampled to 16 kHz mono)",
    "pose_video": "an mp4 motion video (H.264, HEVC, MPEG-4, VP9 or AV1) driving mode 'pose'; only with it",
    "object_image": "the object the sentence names, PNG or JPEG (the release's obj_img); none: a white image",
    "pose_image": "the reference's pose, PNG or JPEG (the release's dwpose_img); none: drawn by the model",
}
TEXT_DESCRIPTION = "what the person says and does with the object, e.g. 'The woman lifts the red cup'"
# What a response reports beside the videos: the clip, and where the time went (seconds); the
# timings are the pipeline's (encode_s, sample_s, decode_s) and the predictor's (the rest).
RESPONSE_NUMBERS = {
    "num_frames": ("integer", "frames in the video"),
    "fps": ("integer", "frames per second"),
    "parse_s": ("number", "decoding and checking the request"),
    "queue_s": ("number", "waiting for a generation slot"),
    "encode_s": ("number", "the model's text, audio and image encoders"),
    "sample_s": ("number", "the sampler"),
    "decode_s": ("number", "the VAE decoder"),
    "mux_s": ("number", "writing the mp4 files"),
    "total_s": ("number", "the whole request inside the server"),
}
ERROR_STATUSES = {
    "400": "a bad request; `error` starts with the field at fault (`image: ...`, `options.steps: ...`)",
    "401": "a token is configured and the request does not carry it (`Authorization: Bearer <token>`)",
    "404": "another model name",
    "408": "the body did not all arrive within --body-timeout-s",
    "413": "the body is over --max-payload-mb",
    "429": "the server or this client has no place left; retry after `Retry-After` seconds",
    "503": "the model is still loading",
}
EXAMPLE_TEXT = "The woman lifts the red cup on the left with her right hand"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _base64(description: str) -> dict:
    return {"type": "string", "contentEncoding": "base64", "description": description + " (base64; a data: URL prefix is allowed)"}


def component_schemas(limits: ServeLimits) -> dict[str, dict]:
    """The schemas this document adds, by name."""
    options = {
        "type": "object",
        "additionalProperties": False,
        "description": "All optional. v1: this object; v2: the `options` input holds it as one JSON string.",
        "properties": {
            "mode": {"type": "string", "enum": list(MODES), "default": "interact",
                     "description": "interact: video and its motion from text, speech and image; motion: the motion "
                                    "video only; audio: talking, no interaction; pose: driven by pose_video"},
            "steps": {"type": "integer", "minimum": 1, "maximum": limits.max_steps,
                      "description": "sampling steps; default: the model's"},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "default": 0,
                     "description": "the same request and seed give the same video"},
            "num_frames": {"type": "integer", "minimum": 1,
                           "description": "1 + 4k, at most the model's count; default: as many as the speech covers"},
            "text_scale": {"type": "number", "minimum": 0, "maximum": limits.max_scale,
                           "description": "text guidance; default: the model's"},
            "audio_scale": {"type": "number", "minimum": 0, "maximum": limits.max_scale,
                            "description": "audio guidance; default: the model's"},
            "face_box": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 4, "maxItems": 4,
                         "description": "[x0, y0, x1, y1] in the image's pixels, where the speech acts (lip sync)"},
            "return_motion": {"type": "boolean", "default": False, "description": "also return the motion video"},
        },
    }
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_text_chars, "description": TEXT_DESCRIPTION}
    v1_instance = {
        "type": "object",
        "additionalProperties": False,
        "required": ["image", "audio", "text"],
        "properties": {name: _base64(MEDIA_DESCRIPTIONS[name]) for name in MEDIA_FIELDS}
        | {"text": text, "options": _ref("GenerationOptions")},
    }
    numbers = {name: {"type": kind, "description": description}
               for name, (kind, description) in RESPONSE_NUMBERS.items()}
    mp4 = _base64("an mp4 file: H.264, with the speech as AAC in `video`")
    v1_prediction = {"type": "object", "additionalProperties": False, "required": list(RESPONSE_NUMBERS),
                     "properties": {name: mp4 for name in OUTPUTS} | numbers,
                     "description": "`video` unless mode is 'motion'; `motion` when asked for or in mode 'motion'"}
    one = {"type": "array", "items": {"const": 1}, "minItems": 1, "maxItems": 1, "description": "always [1]"}
    binary_size = {"type": "integer", "minimum": 4,
                   "description": "binary extension: this tensor's bytes after the JSON header (a 4-byte "
                                  "little-endian length, then the element)"}
    v2_input = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "enum": list(FIELDS)},
            "shape": one,
            "datatype": {"const": "BYTES"},
            "data": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1,
                     "description": "media: base64; text: the sentence; options: GenerationOptions as a JSON string"},
            "parameters": {"type": "object", "properties": {"binary_data_size": binary_size}},
        },
        "description": "One request field as a BYTES tensor of one element: `data` in JSON, or "
                       "`parameters.binary_data_size` with the binary extension. Required: image, audio, text.",
    }
    v2_requested = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "enum": list(OUTPUTS)},
        "parameters": {"type": "object", "properties": {
            "binary_data": {"type": "boolean", "description": "this output raw after the JSON header"}}}}}
    v2_request = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string", "description": "names the request: its progress is at GET /progress/{id}"},
            "parameters": {"type": "object", "properties": {
                "binary_data_output": {"type": "boolean", "description": "every output raw (binary extension)"}}},
            "inputs": {"type": "array", "items": _ref("InteractAvatarInput"), "minItems": 3, "maxItems": len(FIELDS)},
            "outputs": {"type": "array", "items": _ref("InteractAvatarRequestedOutput"), "maxItems": len(OUTPUTS),
                        "description": "naming `motion` also asks for it"},
        },
    }
    v2_output = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "enum": list(OUTPUTS)},
            "shape": one,
            "datatype": {"const": "BYTES"},
            "data": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1,
                     "description": "the mp4, base64 (when not sent raw)"},
            "parameters": {"type": "object", "properties": {
                "content_encoding": {"const": "base64"}, "binary_data_size": binary_size}},
        },
    }
    v2_response = {
        "type": "object",
        "required": ["model_name", "outputs", "parameters"],
        "properties": {
            "model_name": {"const": MODEL_NAME},
            "model_version": {"type": ["string", "null"]},
            "id": {"type": "string"},
            "parameters": {"type": "object", "additionalProperties": False, "required": list(RESPONSE_NUMBERS),
                           "properties": numbers},
            "outputs": {"type": "array", "items": _ref("InteractAvatarOutput"), "minItems": 1},
        },
    }
    progress = {
        "type": "object",
        "required": ["id", "state", "step", "steps", "elapsed_s"],
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": list(STATES),
                      "description": "parsing the request, waiting for a slot, sampling, finishing (decoding, mp4)"},
            "step": {"type": "integer", "minimum": 0, "description": "sampling steps done"},
            "steps": {"type": ["integer", "null"], "description": "sampling steps in all (null until the first)"},
            "elapsed_s": {"type": "number", "description": "since the request reached the model"},
        },
    }
    return {
        "GenerationOptions": options,
        "V1PredictRequest": {"type": "object", "additionalProperties": False, "required": ["instances"],
                             "properties": {"instances": {"type": "array", "items": _ref("V1Instance"),
                                                          "minItems": 1, "maxItems": 1,
                                                          "description": "exactly one: one video per request"}}},
        "V1Instance": v1_instance,
        "V1PredictResponse": {"type": "object", "required": ["predictions"], "properties": {
            "predictions": {"type": "array", "items": _ref("V1Prediction"), "minItems": 1, "maxItems": 1}}},
        "V1Prediction": v1_prediction,
        "InteractAvatarInferenceRequest": v2_request,
        "InteractAvatarInput": v2_input,
        "InteractAvatarRequestedOutput": v2_requested,
        "InteractAvatarInferenceResponse": v2_response,
        "InteractAvatarOutput": v2_output,
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Progress": progress,
    }


def _examples() -> dict[str, dict]:
    """Request and response examples; media stand as placeholders (a real PNG is thousands of
    characters of base64)."""
    options = {"steps": 40, "seed": 1, "return_motion": True}
    numbers = {"num_frames": 81, "fps": 25, "parse_s": 0.05, "queue_s": 0.0, "encode_s": 1.2, "sample_s": 95.3,
               "decode_s": 4.1, "mux_s": 0.6, "total_s": 101.3}
    tensor = {"shape": [1], "datatype": "BYTES"}
    return {
        "v1_request": {"instances": [{"image": "<base64 of ref.png>", "audio": "<base64 of speech.wav>",
                                      "text": EXAMPLE_TEXT, "options": options}]},
        "v1_response": {"predictions": [{"video": "<base64 mp4>", "motion": "<base64 mp4>"} | numbers]},
        "v2_request": {"id": "request-1", "inputs": [
            {"name": "image", **tensor, "data": ["<base64 of ref.png>"]},
            {"name": "audio", **tensor, "data": ["<base64 of speech.wav>"]},
            {"name": "text", **tensor, "data": [EXAMPLE_TEXT]},
            {"name": "options", **tensor, "data": ['{"steps": 40, "seed": 1}']}],
            "outputs": [{"name": "video"}, {"name": "motion"}]},
        "v2_response": {"model_name": MODEL_NAME, "id": "request-1", "parameters": numbers, "outputs": [
            {"name": name, **tensor, "parameters": {"content_encoding": "base64"}, "data": ["<base64 mp4>"]}
            for name in OUTPUTS]},
        "v2_binary_header": {"id": "request-2", "inputs": [
            {"name": "image", **tensor, "parameters": {"binary_data_size": 48213}},
            {"name": "audio", **tensor, "parameters": {"binary_data_size": 64044}},
            {"name": "text", **tensor, "parameters": {"binary_data_size": 63}}],
            "outputs": [{"name": "video", "parameters": {"binary_data": True}}]},
    }


BINARY_LAYOUT = (
    "Binary extension (`application/octet-stream`): the body is a JSON request header (the "
    "InteractAvatarInferenceRequest, each input with `parameters.binary_data_size` instead of `data`) followed "
    "by each input's bytes in the header's order, each one a 4-byte little-endian length then the file's "
    f"bytes; the header `{INFERENCE_CONTENT_LENGTH_HEADER}` gives the JSON header's length. Outputs asked "
    "for with `binary_data` (or `parameters.binary_data_output`) come back the same way: the response's "
    f"`{INFERENCE_CONTENT_LENGTH_HEADER}` header splits its JSON header from the outputs' bytes."
)


def _json(schema: str, examples: dict[str, dict]) -> dict:
    return {"application/json": {"schema": _ref(schema), "examples": examples}}


def _error_responses() -> dict:
    return {status: {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}
            for status, description in ERROR_STATUSES.items()}


def _served(path: str) -> bool:
    """Whether the guard lets a request to `path` through to kserve (guard.py)."""
    return not path.startswith(REPOSITORY_PREFIX) and not any(part in path for part in UNSERVED)


def contract_document(app: FastAPI, limits: ServeLimits) -> dict:
    """The OpenAPI document of `app` (kserve's routes and ours), with this model's contract written in."""
    document = get_openapi(
        title="InteractAvatar endpoint",
        version=version("interactavatar"),
        summary="A reference image, a sentence and speech in; an mp4 of the person doing it, lip-synced, out.",
        description="KServe v1 and the Open Inference Protocol v2 (binary tensor data extension included) "
                    f"for the model `{MODEL_NAME}`. Every route but the health probes, /ui, /docs and this "
                    "document needs `Authorization: Bearer <token>` when the server has a token. "
                    "Details: docs/serving-api.md.",
        routes=app.routes,
    )
    document["paths"] = {path: operations for path, operations in document["paths"].items() if _served(path)}
    document.setdefault("components", {}).setdefault("schemas", {}).update(component_schemas(limits))
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "model_name":
                    parameter["schema"] = {"type": "string", "enum": [MODEL_NAME]}
    examples = _examples()
    v1 = document["paths"][V1_PREDICT]["post"]
    v1["summary"] = "Generate one video (KServe v1, media in base64)"
    v1["requestBody"] = {"required": True, "content": _json(
        "V1PredictRequest", {"interact": {"summary": "a video and its motion", "value": examples["v1_request"]}})}
    v1["responses"] = {"200": {"description": "the video", "content": _json(
        "V1PredictResponse", {"interact": {"value": examples["v1_response"]}})}} | _error_responses()
    v2 = document["paths"][V2_INFER]["post"]
    v2["summary"] = "Generate one video (Open Inference Protocol v2, JSON or binary)"
    v2["description"] = BINARY_LAYOUT
    v2["parameters"] = [p for p in v2.get("parameters", []) if p["name"] != "model_version"] + [{
        "name": INFERENCE_CONTENT_LENGTH_HEADER, "in": "header", "required": False, "schema": {"type": "integer"},
        "description": "binary extension only: the length of the JSON header at the start of the body"}]
    binary = {"schema": {"type": "string", "contentMediaType": "application/octet-stream"},
              "examples": {"header": {"summary": "the JSON header before the tensors' bytes",
                                      "value": examples["v2_binary_header"]}}}
    v2["requestBody"] = {"required": True, "content": _json(
        "InteractAvatarInferenceRequest", {"json": {"summary": "media as base64 strings",
                                                    "value": examples["v2_request"]}})
        | {"application/octet-stream": binary}}
    v2["responses"] = {"200": {"description": "the video (and motion); raw after the JSON header when asked", "content":
                               _json("InteractAvatarInferenceResponse", {"json": {"value": examples["v2_response"]}})
                               | {"application/octet-stream": {"schema": binary["schema"]}}},
                       "422": {"description": "a JSON body that is not an inference request at all (kserve's check)"}
                       } | _error_responses()
    return document


def install_contract(app: FastAPI, limits: ServeLimits) -> None:
    """Serve `contract_document` at /openapi.json (built on first request, once every route is in)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = contract_document(app, limits)
        return app.openapi_schema

    app.openapi = openapi
