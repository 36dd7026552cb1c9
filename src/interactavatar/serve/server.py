"""The KServe REST server for one InteractAvatarModel, assembled from kserve's parts.

kserve.ModelServer.start() is not used as is, for four reasons:
- its REST server binds 0.0.0.0 unconditionally; a local server should listen on loopback only;
- its readiness (/v2/health/ready) is true before any model has loaded; ours is true only once the
  model is (loading runs in the background, so liveness and /metrics answer during a long load);
- kserve 0.21 decodes v2 binary BYTES inputs as UTF-8 (InferRequest.from_bytes), which fails on
  images and audio; the data plane below keeps them as bytes;
- request bodies need a size limit before they are buffered, and overload needs a 429.
"""

from __future__ import annotations

import asyncio
import json

import kserve
import kserve.model_server
from fastapi.responses import JSONResponse
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING, INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.protocol.rest.server import RESTServer

from interactavatar.serve.predictor import InteractAvatarModel, Overloaded

# uvicorn waits this long for running generations on shutdown (k8s allows 900 s, see isvc.py).
SHUTDOWN_GRACE_S = 600
# A client told 429 may retry after about one generation; this is a hint, not a promise.
RETRY_AFTER_S = 30


class PayloadTooLarge(Exception):
    def __init__(self, size: int, limit: int):
        super().__init__(size, limit)
        self.size, self.limit = size, limit


def too_large(_, exc: PayloadTooLarge) -> JSONResponse:
    return JSONResponse({"error": f"body: {exc.size} bytes or more is over the limit of {exc.limit} bytes"},
                        status_code=413)


def overloaded(_, exc: Overloaded) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=429, headers={"Retry-After": str(RETRY_AFTER_S)})


class ServingDataPlane(DataPlane):
    """kserve's data plane, ready only when every model is loaded and binary-safe for v2 BYTES."""

    async def ready(self) -> bool:
        models = list(self.model_registry.get_models().values())
        return bool(models) and all([await model.healthy() for model in models])

    async def get_model(self, name: str):
        # kserve's loads a model that is not ready, on the event loop; ours loads in the background.
        model = self.model_registry.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        if not await model.healthy():
            raise ModelNotReady(name, "It is still loading.")
        return model

    def decode_inference_request(self, body, headers: dict, model_name: str) -> InferRequest:
        """A v2 body of JSON header + binary tensors -> InferRequest whose binary inputs stay bytes."""
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        try:
            json_length = int(headers[INFERENCE_CONTENT_LENGTH_HEADER])
            header = json.loads(body[:json_length])
        except (KeyError, ValueError) as err:
            raise InvalidInput(f"{INFERENCE_CONTENT_LENGTH_HEADER}: missing or not the length of a JSON header ({err})") from None
        if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
            raise InvalidInput("inputs: expected a list of tensors")
        inputs, raw_inputs, offset = [], [], json_length
        for index, spec in enumerate(header["inputs"]):
            if not isinstance(spec, dict) or not {"name", "shape", "datatype"} <= set(spec):
                raise InvalidInput(f"inputs[{index}]: expected an object with name, shape and datatype")
            parameters = spec.get("parameters") or {}
            size = parameters.get("binary_data_size")
            raw = None
            if size is not None:
                if not isinstance(size, int) or size < 0 or offset + size > len(body):
                    raise InvalidInput(f"{spec['name']}: binary_data_size {size!r} runs past the end of the body")
                raw, offset = body[offset:offset + size], offset + size
            elif spec.get("data") is None:
                raise InvalidInput(f"{spec['name']}: neither data nor parameters.binary_data_size")
            inputs.append(InferInput(spec["name"], spec["shape"], str(spec["datatype"]), spec.get("data"), parameters))
            raw_inputs.append(raw)
        if offset != len(body):
            raise InvalidInput(f"body: {len(body) - offset} bytes after the last binary input")
        outputs = header.get("outputs") or []
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o for o in outputs):
            raise InvalidInput("outputs: expected a list of objects with a name")
        return InferRequest(
            model_name=model_name, infer_inputs=inputs, request_id=header.get("id"), raw_inputs=raw_inputs,
            parameters=header.get("parameters"),
            request_outputs=[RequestedOutput(o["name"], o.get("parameters")) for o in outputs] or None,
        )


class PayloadLimit:
    """ASGI middleware: bodies over `max_bytes` get 413 without being held in memory."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(None, PayloadTooLarge(int(declared), self.max_bytes))(scope, receive, send)
        received = 0

        async def counting_receive():
            # Chunked bodies declare no length: count them as they arrive.
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise PayloadTooLarge(received, self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)


def build_rest_server(model: InteractAvatarModel, host: str, port: int) -> RESTServer:
    """kserve's REST server for `model` on host:port (nothing listens until it is started)."""
    model_server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1)
    model_server.register_model(model)
    dataplane = ServingDataPlane(model_registry=model_server.registered_models)
    app = kserve.model_server.app
    app.add_middleware(PayloadLimit, max_bytes=model.limits.max_payload_bytes)
    app.add_exception_handler(PayloadTooLarge, too_large)
    app.add_exception_handler(Overloaded, overloaded)
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, dataplane, model_server.model_repository_extension, port,
                      grace_period=SHUTDOWN_GRACE_S)
    rest.config.host = host
    return rest


async def _serve(rest: RESTServer, model: InteractAvatarModel) -> None:
    serving = asyncio.create_task(rest.start())
    try:
        await asyncio.to_thread(model.load)
    except BaseException:
        serving.cancel()
        raise
    await serving


def serve(model: InteractAvatarModel, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until SIGINT/SIGTERM; the model loads in the background (ready once loaded)."""
    asyncio.run(_serve(build_rest_server(model, host, port), model))
