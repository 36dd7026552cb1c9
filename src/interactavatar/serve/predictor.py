"""The KServe predictor: one InteractAvatar model directory behind the v1 and v2 protocols.

A request is parsed and its media decoded in a helper thread (a bad one is refused before it
waits), then admitted: at most `max_concurrency` generations run, each in the predictor's own
worker thread so that the event loop keeps answering health checks and new requests, and at most
`max_queue` more wait for a slot; the rest are refused with 429 at once, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import kserve
from kserve.protocol.infer_type import InferRequest

from interactavatar.serve.contract import (
    GenerationOptions,
    GenerationRequest,
    ServeLimits,
    build_request,
    parse_options,
    parse_options_json,
    parse_text,
    refuse,
)
from interactavatar.serve.protocols import fields_from_v1, fields_from_v2, v1_response, v2_response


class Overloaded(RuntimeError):
    """Every generation slot and queue place is taken: HTTP 429 with Retry-After."""


class Admission:
    """At most `concurrency` holders at once and `queue` waiters; further callers are refused.

    Only touched from the event loop's thread, so the plain counter needs no lock.
    """

    def __init__(self, concurrency: int, queue: int):
        self._slots = asyncio.Semaphore(concurrency)
        self._capacity = concurrency + queue
        self._admitted = 0

    @contextlib.asynccontextmanager
    async def slot(self):
        if self._admitted >= self._capacity:
            raise Overloaded(f"{self._admitted} requests are already running or queued; retry later")
        self._admitted += 1
        try:
            async with self._slots:
                yield
        finally:
            self._admitted -= 1


class InteractAvatarModel(kserve.Model):
    def __init__(self, name: str, model_ref: str, limits: ServeLimits | None = None, device: str = "cpu"):
        """model_ref: a model directory, /mnt/models, models:/NAME@alias or an s3:// URI."""
        super().__init__(name)
        self.model_ref = model_ref
        self.limits = limits or ServeLimits()
        self.device = device
        self.pipeline = None
        self._admission = Admission(self.limits.max_concurrency, self.limits.max_queue)
        self._workers = ThreadPoolExecutor(self.limits.max_concurrency, thread_name_prefix="generate")

    def load(self) -> bool:
        from interactavatar.inference.pipeline import InteractAvatarPipeline
        from interactavatar.io.model_refs import resolve_model_dir

        self.pipeline = InteractAvatarPipeline.from_pretrained(resolve_model_dir(self.model_ref), self.device)
        self.ready = True
        return self.ready

    def start(self) -> None:
        """kserve's default marks the model ready here; ready means loaded (see `load`)."""

    def stop(self) -> None:
        self.ready = False
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _parse(self, payload) -> tuple[GenerationRequest, set[str]]:
        cfg = self.pipeline.cfg
        frame_step = cfg.vae.temporal_compression
        if isinstance(payload, InferRequest):
            media, text, options_json, requested = fields_from_v2(payload)
            options = GenerationOptions() if options_json is None else parse_options_json(options_json, self.limits, frame_step)
        else:
            media, text, options_value = fields_from_v1(payload)
            options, requested = parse_options(options_value, self.limits, frame_step), set()
        if options.mode == "motion" and "video" in requested:
            raise refuse("outputs.video", "mode 'motion' makes no video")
        text = parse_text(text, self.limits)
        request = build_request(media, text, options, self.limits, cfg.audio.sample_rate, cfg.audio.fps)
        return request, requested

    def _generate(self, request: GenerationRequest, want_motion: bool) -> tuple[dict[str, bytes], dict]:
        """Runs in a worker thread: sampling, then the mp4 files (video with the speech muxed in)."""
        result = self.pipeline(request.image, request.text, request.audio, pose_video=request.pose_video,
                               object_image=request.object_image, pose_image=request.pose_image,
                               **request.options.pipeline_kwargs())
        start = time.perf_counter()
        video, motion = result.to_mp4_bytes(with_motion=want_motion)
        videos = {name: data for name, data in (("video", video), ("motion", motion)) if data is not None}
        frames = result.video if result.video is not None else result.motion
        metadata = {"num_frames": len(frames), "fps": result.fps, **result.timings,
                    "mux_s": time.perf_counter() - start}
        return videos, metadata

    async def predict(self, payload, headers: dict | None = None, response_headers: dict | None = None):
        started = time.perf_counter()
        request, requested = await asyncio.to_thread(self._parse, payload)
        parsed = time.perf_counter()
        want_motion = request.options.return_motion or request.options.mode == "motion" or "motion" in requested
        async with self._admission.slot():
            admitted = time.perf_counter()
            loop = asyncio.get_running_loop()
            videos, metadata = await loop.run_in_executor(self._workers, self._generate, request, want_motion)
        metadata |= {"parse_s": parsed - started, "queue_s": admitted - parsed, "total_s": time.perf_counter() - started}
        metadata = {k: round(v, 4) if isinstance(v, float) else v for k, v in metadata.items()}
        if isinstance(payload, InferRequest):
            return v2_response(payload, self.name, videos, metadata)
        return v1_response(videos, metadata)
