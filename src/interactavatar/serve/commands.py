"""`interactavatar serve` (the KServe endpoint) and `interactavatar serve manifest` (its InferenceService).

`serve` binds its port before anything slow (importing torch and kserve, resolving and loading the
model, which takes minutes at paper size): a port in use is one line naming host:port at once.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
from typing import TYPE_CHECKING

from interactavatar.config import AUTH_TOKEN_FILE_ENV, MODEL_NAME

if TYPE_CHECKING:
    from interactavatar.serve.guard import TokenFile

# Where the token file's path comes from when --auth-token-file is not given; the cluster's
# ServingRuntime sets it to its mounted Secret, /var/run/secrets/interactavatar/token.


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help=f"serve a model as `{MODEL_NAME}` over KServe's v1 and v2 protocols")
    serve.add_argument("--model", help="model directory, /mnt/models, models:/NAME@alias or s3://...")
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--max-concurrency", type=int, default=1, help="generations running at once")
    serve.add_argument("--max-queue", type=int, default=4,
                       help="requests in the server besides the running ones (read, parsed, waiting); more get 429")
    serve.add_argument("--max-per-client", type=int, default=4,
                       help="requests one client address may have in the server at once; more get 429")
    serve.add_argument("--max-payload-mb", type=float, default=64.0, help="larger request bodies get 413")
    serve.add_argument("--body-timeout-s", type=float, default=60.0,
                       help="a request body not all there within this gets 408")
    serve.add_argument("--max-audio-seconds", type=float, default=60.0)
    serve.add_argument("--auth-token-file", default=None,
                       help=f"require `Authorization: Bearer <the file's token>` (default: ${AUTH_TOKEN_FILE_ENV}); "
                            "the health probes stay open")
    serve.add_argument("--no-auth", action="store_true",
                       help="serve a non-loopback --host without a token (a proxy or mesh authenticates)")
    serve.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda when there is one)")
    serve.set_defaults(func=run_serve)
    serve_commands = serve.add_subparsers(dest="serve_command")
    manifest = serve_commands.add_parser("manifest", help="print the InferenceService YAML")
    manifest.add_argument("--storage-uri", default=None,
                          help="the champion's s3:// URI (default: none, as committed: the deploy step sets it)")
    manifest.add_argument("--name", default=MODEL_NAME)
    manifest.add_argument("--namespace", default="interactavatar-serving")
    manifest.add_argument("--service-account", default="interactavatar-predictor")
    manifest.add_argument("--gpu", type=int, default=1, help="GPUs per replica (0: CPU only)")
    manifest.set_defaults(func=run_manifest)


def run_manifest(args: argparse.Namespace) -> int:
    from interactavatar.serve.isvc import build_inference_service, render_manifest

    isvc = build_inference_service(args.name, args.namespace, args.storage_uri,
                                   args.service_account, gpu=args.gpu)
    sys.stdout.write(render_manifest(isvc))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    if not args.model:
        raise ValueError("serve: --model is required")
    if (args.max_concurrency < 1 or args.max_queue < 0 or args.max_per_client < 1 or args.max_payload_mb <= 0
            or args.body_timeout_s <= 0):
        raise ValueError("serve: --max-concurrency >= 1, --max-queue >= 0, --max-per-client >= 1, "
                         "--max-payload-mb > 0 and --body-timeout-s > 0")
    listener = listen_on(args.host, args.port)  # first: the rest imports kserve, torch and the model
    token = auth_token(args.auth_token_file, args.no_auth, args.host)
    import torch

    from interactavatar.serve.contract import ServeLimits
    from interactavatar.serve.predictor import InteractAvatarModel
    from interactavatar.serve.server import serve

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    limits = ServeLimits(max_payload_bytes=int(args.max_payload_mb * 2**20), max_concurrency=args.max_concurrency,
                         max_queue=args.max_queue, max_per_client=args.max_per_client,
                         body_timeout_s=args.body_timeout_s, max_audio_seconds=args.max_audio_seconds)
    serve(InteractAvatarModel(MODEL_NAME, args.model, limits, device), listener, token)
    return 0


def listen_on(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, for the server to listen on; ValueError naming host:port when
    it cannot be had (in use, an address this machine does not have, a name that does not resolve).
    SO_REUSEADDR as uvicorn sets it: a port whose old connections linger in TIME_WAIT is free."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, kind, proto)
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as err:
        listener.close()
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"{host}:{port} is already in use; stop what listens there or choose another --port") from None
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror})") from None
    return listener


def auth_token(flag: str | None, no_auth: bool, host: str) -> TokenFile | None:
    """The token requests must carry (a guard.TokenFile), or None. The file is --auth-token-file,
    else $INTERACTAVATAR_AUTH_TOKEN_FILE. Without one a loopback server is open (only this machine
    reaches it); any other host must be given a token or, knowingly, --no-auth: a server reachable
    from the network does not start open by accident."""
    from interactavatar.serve.guard import TokenFile

    path = flag or os.environ.get(AUTH_TOKEN_FILE_ENV) or None
    if path and no_auth:
        raise ValueError(f"serve: --no-auth and a token file ({path}) contradict each other; give one")
    if path:
        return TokenFile(path)
    if not no_auth and not _is_loopback(host):
        raise ValueError(f"serve: --host {host} is reachable from the network; give --auth-token-file PATH "
                         f"(or ${AUTH_TOKEN_FILE_ENV}) or, if a proxy or mesh authenticates, --no-auth")
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
