"""The two wire formats mapped onto the contract.

v1: `{"instances": [{"image": b64, "audio": b64, "text": str, "options": {...}}]}` ->
    `{"predictions": [{"video": b64, "motion": b64, "num_frames": ..., "*_s": seconds}]}`.
v2 (Open Inference Protocol): BYTES tensors of shape [1] with the same names (options as a JSON
    string). Media travel raw with the binary tensor data extension, or as base64 strings in plain
    JSON; outputs are raw when the request asks for binary data, base64 (parameter
    `content_encoding: base64`) otherwise, because JSON strings cannot carry arbitrary bytes.
"""

from __future__ import annotations

import base64
import struct
import uuid

import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from interactavatar.serve.contract import FIELDS, MEDIA_FIELDS, decode_base64, refuse

OUTPUTS = ("video", "motion")


def fields_from_v1(payload) -> tuple[dict[str, bytes], object, object]:
    """A v1 body -> (media bytes by field, text, options value), unchecked beyond the structure."""
    if not isinstance(payload, dict):
        raise refuse("body", "expected a JSON object with 'instances'")
    instances = payload.get("instances")
    if not isinstance(instances, list) or len(instances) != 1:
        raise refuse("instances", "expected a list of exactly one instance (one video per request)")
    instance = instances[0]
    if not isinstance(instance, dict):
        raise refuse("instances[0]", f"expected an object, got {type(instance).__name__}")
    for name in instance:
        if name not in FIELDS:
            raise refuse(f"instances[0].{name}", f"unknown field; expected one of {', '.join(FIELDS)}")
    media = {name: decode_base64(name, instance[name]) for name in MEDIA_FIELDS if instance.get(name) is not None}
    return media, instance.get("text"), instance.get("options")


def one_element_shape(name: str, shape) -> None:
    """Every input is one element: its shape must be [1], the integer (not [1.0], [1, 1, 1] or [true],
    whose products are 1 too)."""
    if not (isinstance(shape, list) and len(shape) == 1 and type(shape[0]) is int and shape[0] == 1):
        raise refuse(name, f"expected shape [1], got {shape!r}")


def binary_element(name: str, raw: bytes | memoryview) -> bytes:
    """The one element of a BYTES input sent binary: a 4-byte little-endian length, then that many
    bytes, and nothing after. A length that does not match the data is refused naming the input
    (kserve's own parser fails on it with struct.error, a 500)."""
    if len(raw) < 4:
        raise refuse(name, f"{len(raw)} bytes of binary data hold no 4-byte element length")
    (length,) = struct.unpack_from("<I", raw)
    if length != len(raw) - 4:
        raise refuse(name, f"the element's length prefix says {length} bytes, its binary data holds {len(raw) - 4}")
    return bytes(raw[4:])


def _element(tensor) -> bytes | str:
    """The one element of a BYTES tensor of shape [1]: bytes when it came binary, str from JSON."""
    if tensor.datatype != "BYTES":
        raise refuse(tensor.name, f"expected datatype BYTES, got {tensor.datatype}")
    one_element_shape(tensor.name, tensor.shape)
    try:
        element = tensor.as_numpy().reshape(-1)[0]
    except (ValueError, TypeError, IndexError) as err:
        raise refuse(tensor.name, f"data does not match shape {tensor.shape} ({err})") from None
    if not isinstance(element, (bytes, str)):
        raise refuse(tensor.name, f"expected a string, got {type(element).__name__}")
    return element


def _as_text(name: str, element: bytes | str | None) -> str | None:
    if isinstance(element, bytes):
        try:
            return element.decode("utf-8")
        except UnicodeDecodeError:
            raise refuse(name, "not UTF-8 text") from None
    return element


def fields_from_v2(request: InferRequest) -> tuple[dict[str, bytes], str | None, str | None, set[str]]:
    """A v2 request -> (media bytes by field, text, options JSON, requested output names)."""
    elements: dict[str, bytes | str] = {}
    for tensor in request.inputs:
        if tensor.name not in FIELDS:
            raise refuse(f"inputs.{tensor.name}", f"unknown input; expected one of {', '.join(FIELDS)}")
        if tensor.name in elements:
            raise refuse(f"inputs.{tensor.name}", "given twice")
        elements[tensor.name] = _element(tensor)
    media = {
        name: value if isinstance(value, bytes) else decode_base64(name, value)
        for name, value in elements.items()
        if name in MEDIA_FIELDS
    }
    requested = {output.name for output in request.request_outputs or []}
    for name in requested - set(OUTPUTS):
        raise refuse(f"outputs.{name}", f"unknown output; expected one of {', '.join(OUTPUTS)}")
    return media, _as_text("text", elements.get("text")), _as_text("options", elements.get("options")), requested


def v1_response(videos: dict[str, bytes], metadata: dict) -> dict:
    encoded = {name: base64.b64encode(data).decode("ascii") for name, data in videos.items()}
    return {"predictions": [encoded | metadata]}


def _wants_binary(request: InferRequest, name: str) -> bool:
    """The rule InferResponse.to_rest applies: a requested output's own `binary_data`, else the
    request's `binary_data_output`."""
    if request.request_outputs:
        return any(o.name == name and bool(o.binary_data) for o in request.request_outputs)
    return bool(request.use_binary_outputs)


def v2_response(request: InferRequest, model_name: str, videos: dict[str, bytes], metadata: dict) -> InferResponse:
    outputs = []
    for name, data in videos.items():
        binary = _wants_binary(request, name)
        value = data if binary else base64.b64encode(data).decode("ascii")
        outputs.append(InferOutput(name=name, shape=[1], datatype="BYTES", data=np.array([value], dtype=object),
                                   parameters=None if binary else {"content_encoding": "base64"}))
    return InferResponse(
        response_id=request.id or str(uuid.uuid4()),
        model_name=model_name,
        infer_outputs=outputs,
        parameters=metadata,
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )
