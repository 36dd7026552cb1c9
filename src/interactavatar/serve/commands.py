"""`interactavatar serve` (the KServe endpoint) and `interactavatar serve manifest` (its InferenceService)."""

from __future__ import annotations

import argparse
import sys

from interactavatar.config import MODEL_NAME


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help=f"serve a model as `{MODEL_NAME}` over KServe's v1 and v2 protocols")
    serve.add_argument("--model", help="model directory, /mnt/models, models:/NAME@alias or s3://...")
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--max-concurrency", type=int, default=1, help="generations running at once")
    serve.add_argument("--max-queue", type=int, default=4, help="requests waiting for a slot; more get 429")
    serve.add_argument("--max-payload-mb", type=float, default=64.0, help="larger request bodies get 413")
    serve.add_argument("--max-audio-seconds", type=float, default=60.0)
    serve.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda when there is one)")
    serve.set_defaults(func=run_serve)
    serve_commands = serve.add_subparsers(dest="serve_command")
    manifest = serve_commands.add_parser("manifest", help="print the InferenceService YAML")
    manifest.add_argument("--storage-uri", default=None, help="the champion's s3:// URI")
    manifest.add_argument("--name", default=MODEL_NAME)
    manifest.add_argument("--namespace", default="interactavatar-serving")
    manifest.add_argument("--service-account", default="interactavatar-predictor")
    manifest.add_argument("--gpu", type=int, default=1, help="GPUs per replica (0: CPU only)")
    manifest.set_defaults(func=run_manifest)


def run_manifest(args: argparse.Namespace) -> int:
    from interactavatar.serve.isvc import DEFAULT_STORAGE_URI, build_inference_service, render_manifest

    isvc = build_inference_service(args.name, args.namespace, args.storage_uri or DEFAULT_STORAGE_URI,
                                   args.service_account, gpu=args.gpu)
    sys.stdout.write(render_manifest(isvc))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    if not args.model:
        raise ValueError("serve: --model is required")
    if args.max_concurrency < 1 or args.max_queue < 0 or args.max_payload_mb <= 0:
        raise ValueError("serve: --max-concurrency >= 1, --max-queue >= 0 and --max-payload-mb > 0")
    import torch

    from interactavatar.serve.contract import ServeLimits
    from interactavatar.serve.predictor import InteractAvatarModel
    from interactavatar.serve.server import serve

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    limits = ServeLimits(max_payload_bytes=int(args.max_payload_mb * 2**20), max_concurrency=args.max_concurrency,
                         max_queue=args.max_queue, max_audio_seconds=args.max_audio_seconds)
    serve(InteractAvatarModel(MODEL_NAME, args.model, limits, device), args.host, args.port)
    return 0
