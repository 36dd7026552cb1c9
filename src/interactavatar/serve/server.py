"""The KServe REST server for one InteractAvatarModel, assembled from kserve's parts.

kserve.ModelServer.start() is not used as is, for these reasons:
- its REST server binds 0.0.0.0 unconditionally; a local server should listen on loopback only;
- its readiness (/v2/health/ready) is true before any model has loaded; ours is true only once the
  model is (loading runs in the background, so liveness and /metrics answer during a long load);
- its liveness is true whatever happened to the model; ours fails once the model is neither loaded
  nor loading, so that Kubernetes restarts a pod that can no longer serve;
- kserve 0.21 decodes v2 binary BYTES inputs as UTF-8 (InferRequest.from_bytes), which fails on
  images and audio, and answers a lying element length with a 500 (struct.error); the data plane
  below keeps them as bytes and refuses what does not add up, naming the input;
- requests need a door before kserve sees them (guard.py): a token, no model repository API,
  admission per server and per client, body size and time limits, cancellation on disconnect;
- it listens on a socket bound before the model loads (`interactavatar serve` binds it first), so a
  port in use is reported at once, not after a load of minutes;
- this server adds its documented contract (openapi.py), a web page for endpoint consumers and a
  request's progress (pages.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import kserve
import kserve.model_server
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING, INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotLive, ServerNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.protocol.rest.server import RESTServer
from starlette.responses import JSONResponse

from interactavatar.serve.guard import RequestGuard, TokenFile
from interactavatar.serve.openapi import install_contract
from interactavatar.serve.pages import add_routes
from interactavatar.serve.predictor import InteractAvatarModel
from interactavatar.serve.protocols import binary_element, one_element_shape

# uvicorn waits this long for running generations on shutdown (k8s allows 900 s, see isvc.py).
SHUTDOWN_GRACE_S = 600

logger = logging.getLogger(__name__)


def _object(where: str, value, required: bool = False) -> dict:
    """`value` when it is a JSON object (None -> {} unless `required`), else refused naming `where`."""
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


class ServingDataPlane(DataPlane):
    """kserve's data plane: live while the model is loaded or loading, ready only once every model
    is loaded, and binary-safe for v2 BYTES."""

    def metadata(self) -> dict:
        # kserve advertises its model repository extension, which the guard refuses; what this
        # server does speak is the binary tensor data extension (serve/protocols.py).
        return super().metadata() | {"extensions": ["binary_tensor_data"]}

    async def live(self) -> dict[str, str]:
        models = list(self.model_registry.get_models().values())
        if not models or not all(model.alive for model in models):
            raise ServerNotLive("The model is neither loaded nor loading; restart the server.")
        return {"status": "alive"}

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
        """A v2 body of JSON header + binary tensors -> InferRequest whose binary BYTES inputs stay
        bytes. Every field of the header is checked for its type here: kserve's own types would
        fail later with AttributeError (a 500) on, say, a list where parameters belong."""
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        try:
            json_length = int(headers[INFERENCE_CONTENT_LENGTH_HEADER])
            if not 0 < json_length <= len(body):
                raise ValueError(f"{json_length} is not within the body's {len(body)} bytes")
            header = json.loads(body[:json_length])
        except (KeyError, ValueError, RecursionError) as err:
            raise InvalidInput(f"{INFERENCE_CONTENT_LENGTH_HEADER}: missing or not the length of a JSON header ({err})") from None
        header = _object("body", header)
        if not isinstance(header.get("inputs"), list):
            raise InvalidInput("inputs: expected a list of tensors")
        view = memoryview(body)
        inputs, offset = [], json_length
        for index, spec in enumerate(header["inputs"]):
            if not isinstance(spec, dict) or not {"name", "shape", "datatype"} <= set(spec):
                raise InvalidInput(f"inputs[{index}]: expected an object with name, shape and datatype")
            if not isinstance(spec["name"], str) or not isinstance(spec["datatype"], str):
                raise InvalidInput(f"inputs[{index}]: name and datatype must be strings")
            name, datatype, data = spec["name"], spec["datatype"], spec.get("data")
            parameters = _object(f"{name}.parameters", spec.get("parameters"))
            size = parameters.get("binary_data_size")
            if size is not None:
                if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(body):
                    raise InvalidInput(f"{name}: binary_data_size {size!r} runs past the end of the body")
                raw, offset = view[offset:offset + size], offset + size
                if datatype != "BYTES":
                    raise InvalidInput(f"{name}: expected datatype BYTES, got {datatype}")
                one_element_shape(name, spec["shape"])
                data = [binary_element(name, raw)]
            elif data is None:
                raise InvalidInput(f"{name}: neither data nor parameters.binary_data_size")
            inputs.append(InferInput(name, spec["shape"], datatype, data, parameters))
        if offset != len(body):
            raise InvalidInput(f"body: {len(body) - offset} bytes after the last binary input")
        outputs = header.get("outputs") or []
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise InvalidInput("outputs: expected a list of objects with a name")
        request_id = header.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise InvalidInput(f"id: expected a string, got {type(request_id).__name__}")
        return InferRequest(
            model_name=model_name, infer_inputs=inputs, request_id=request_id,
            parameters=_object("parameters", header.get("parameters")) or None,
            request_outputs=[RequestedOutput(o["name"], _object(f"outputs.{o['name']}.parameters",
                                                                o.get("parameters")) or None)
                             for o in outputs] or None,
        )


async def _not_ready(_request, exc: ServerNotReady) -> JSONResponse:
    return JSONResponse(status_code=503, content={"error": str(exc)})


class BoundRESTServer(RESTServer):
    """kserve's REST server on a socket bound beforehand. RESTServer.run(sockets) takes one too, but
    runs its own event loop; here the model loads beside the server on ours (`_serve`)."""

    def __init__(self, *args, listener: socket.socket, **kwargs):
        super().__init__(*args, **kwargs)
        self.listener = listener

    def _add_exception_handlers(self, app) -> None:
        super()._add_exception_handlers(app)
        # A readiness probe while the model loads is routine: kserve logged each 503 with a
        # traceback at ERROR, a screenful per probe for the minutes a large model takes to load.
        app.add_exception_handler(ServerNotReady, _not_ready)

    async def start(self) -> None:
        self.create_application()
        host, port = self.listener.getsockname()[:2]
        logger.info("serving on http://%s:%d", f"[{host}]" if ":" in host else host, port)
        await self._server.serve(sockets=[self.listener])


def build_rest_server(model: InteractAvatarModel, listener: socket.socket,
                      token: TokenFile | None = None) -> RESTServer:
    """kserve's REST server for `model` on the bound socket `listener`, behind the guard, `token`
    required when given (nothing is served until it is started)."""
    port = listener.getsockname()[1]
    model_server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1)
    model_server.register_model(model)
    dataplane = ServingDataPlane(model_registry=model_server.registered_models)
    app = kserve.model_server.app
    app.add_middleware(RequestGuard, limits=model.limits, token=token)
    add_routes(app, model.progress)
    install_contract(app, model.limits)
    return BoundRESTServer(FASTAPI_APP_IMPORT_STRING, dataplane, model_server.model_repository_extension, port,
                           grace_period=SHUTDOWN_GRACE_S, listener=listener)


async def _serve(rest: RESTServer, model: InteractAvatarModel) -> None:
    serving = asyncio.create_task(rest.start())
    try:
        await asyncio.to_thread(model.load)
    except BaseException:
        # A graceful exit, as on SIGTERM: cancelling the task instead made uvicorn print its
        # lifespan's CancelledError traceback above the load's one-line error.
        rest._server.should_exit = True
        await asyncio.wait([serving], timeout=30)
        serving.cancel()
        raise
    await serving


def serve(model: InteractAvatarModel, listener: socket.socket, token: TokenFile | None = None) -> None:
    """Serve on `listener` (commands.listen_on binds it) until SIGINT/SIGTERM; the model loads in the
    background (ready once loaded)."""
    asyncio.run(_serve(build_rest_server(model, listener, token), model))
