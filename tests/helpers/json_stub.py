"""The base of the loopback API stubs (Kubernetes, Kubeflow Trainer, KFP): stand-ins for servers
that cannot run here, answering in JSON."""

import json
from http.server import BaseHTTPRequestHandler


class JSONStubHandler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
