"""A client for the endpoint: v2 with the binary tensor data extension (media travel raw, not
base64-inflated), or v1 JSON. Requests are built with kserve's InferRequest; binary responses are
split by hand because kserve 0.21's InferResponse.from_bytes decodes BYTES outputs as UTF-8.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput, deserialize_bytes_tensor

from interactavatar.config import AUTH_TOKEN_FILE_ENV, MODEL_NAME


class EndpointError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass
class EndpointResult:
    videos: dict[str, bytes]  # "video" and/or "motion": mp4 files
    metadata: dict = field(default_factory=dict)  # num_frames, fps, *_s timings


def bearer_headers(token_file: str | Path | None) -> dict[str, str]:
    """`Authorization: Bearer <token>` from `token_file`, else from the file named by
    $INTERACTAVATAR_AUTH_TOKEN_FILE (the endpoint's own Secret); no header when neither is set."""
    path = token_file or os.environ.get(AUTH_TOKEN_FILE_ENV)
    if not path:
        return {}
    try:
        token = Path(path).read_text().strip()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the endpoint's token file ({err.strerror})") from None
    if not token:
        raise ValueError(f"{path}: the endpoint's token file is empty")
    return {"Authorization": f"Bearer {token}"}


class EndpointClient:
    def __init__(self, url: str, model_name: str = MODEL_NAME, protocol: str = "v2", timeout_s: float = 1800.0,
                 token_file: str | Path | None = None):
        if protocol not in ("v1", "v2"):
            raise ValueError(f"protocol: {protocol!r}, expected v1 or v2")
        self.url, self.model_name, self.protocol = url.rstrip("/"), model_name, protocol
        # Generation takes minutes on big models; connecting should not.
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0), headers=bearer_headers(token_file))

    def close(self) -> None:
        self._http.close()

    def ready(self) -> bool:
        try:
            return self._http.get(f"{self.url}/v2/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url}: not ready after {timeout_s:g} s")
            time.sleep(0.2)

    def generate(self, image: bytes, audio: bytes, text: str, options: dict | None = None,
                 pose_video: bytes | None = None, object_image: bytes | None = None,
                 pose_image: bytes | None = None) -> EndpointResult:
        """image, object_image, pose_image: PNG/JPEG bytes; audio: WAV bytes; options: see
        docs/serving-api.md."""
        fields = {"image": image, "audio": audio, "text": text.encode(), "pose_video": pose_video,
                  "object_image": object_image, "pose_image": pose_image,
                  "options": json.dumps(options).encode() if options else None}
        fields = {name: value for name, value in fields.items() if value is not None}
        return self._v2(fields, options or {}) if self.protocol == "v2" else self._v1(fields)

    def _post(self, path: str, **kwargs) -> httpx.Response:
        response = self._http.post(f"{self.url}{path}", **kwargs)
        if response.status_code != 200:
            try:
                message = response.json().get("error") or response.json().get("detail")
            except ValueError:
                message = response.text
            raise EndpointError(response.status_code, str(message))
        return response

    def _v1(self, fields: dict[str, bytes]) -> EndpointResult:
        instance = {name: base64.b64encode(value).decode("ascii") for name, value in fields.items()
                    if name not in ("text", "options")}
        instance["text"] = fields["text"].decode()
        if "options" in fields:
            instance["options"] = json.loads(fields["options"])
        prediction = self._post(f"/v1/models/{self.model_name}:predict", json={"instances": [instance]}).json()
        prediction = prediction["predictions"][0]
        videos = {name: base64.b64decode(prediction.pop(name)) for name in ("video", "motion") if name in prediction}
        return EndpointResult(videos, prediction)

    def _v2(self, fields: dict[str, bytes], options: dict) -> EndpointResult:
        inputs = []
        for name, value in fields.items():
            tensor = InferInput(name=name, shape=[1], datatype="BYTES")
            tensor.set_data_from_numpy(np.array([value], dtype=object), binary_data=True)
            inputs.append(tensor)
        mode = options.get("mode", "interact")
        wanted = [name for name, wanted in (("video", mode != "motion"),
                                            ("motion", options.get("return_motion") or mode == "motion")) if wanted]
        request = InferRequest(model_name=self.model_name, infer_inputs=inputs,
                               request_outputs=[RequestedOutput(name, {"binary_data": True}) for name in wanted])
        body, json_length = request.to_rest()
        response = self._post(f"/v2/models/{self.model_name}/infer", content=body, headers={
            "Content-Type": "application/octet-stream", INFERENCE_CONTENT_LENGTH_HEADER: str(json_length)})
        return parse_v2_response(response.content, response.headers.get(INFERENCE_CONTENT_LENGTH_HEADER))


def parse_v2_response(content: bytes, json_length: str | None) -> EndpointResult:
    """A v2 response body (JSON header, then binary outputs in order) -> the mp4 files by name."""
    length = int(json_length) if json_length else len(content)
    header, offset, videos = json.loads(content[:length]), length, {}
    for output in header["outputs"]:
        parameters = output.get("parameters") or {}
        if "binary_data_size" in parameters:
            end = offset + parameters["binary_data_size"]
            videos[output["name"]] = deserialize_bytes_tensor(content[offset:end])[0]
            offset = end
        else:
            videos[output["name"]] = base64.b64decode(output["data"][0])
    return EndpointResult(videos, header.get("parameters") or {})
