"""The KServe predictor: one InteractAvatar model directory behind the v1 and v2 protocols.

Admission happens at the door (guard.py: at most `max_concurrency + max_queue` requests in the
server, `max_per_client` per client). Here a request is parsed and its media decoded in a helper
thread (a bad one is refused before it waits), then waits for one of `max_concurrency` slots; each
generation runs in the predictor's own worker thread so that the event loop keeps answering
health checks and new requests.

A request cancelled while it runs (its client went away: the guard cancels it) sets its
generation's stop flag; the worker stops at its next sampling step, and the slot is held until
it has, so that a cancelled generation never runs beside the next one. The same per-step callback
reports a v2 request's progress under its `id` (progress.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import kserve
from kserve.protocol.infer_type import InferRequest

from interactavatar.serve.contract import (
    FIELDS,
    GenerationOptions,
    GenerationRequest,
    ServeLimits,
    build_request,
    parse_options,
    parse_options_json,
    parse_text,
    refuse,
)
from interactavatar.serve.metrics import GENERATIONS, RUNNING, WAITING
from interactavatar.serve.progress import Progress, ProgressBoard
from interactavatar.serve.protocols import OUTPUTS, fields_from_v1, fields_from_v2, v1_response, v2_response


class GenerationCancelled(Exception):
    """Raised in the worker thread at a sampling step once its request was cancelled."""


class InteractAvatarModel(kserve.Model):
    def __init__(self, name: str, model_ref: str, limits: ServeLimits | None = None, device: str = "cpu"):
        """model_ref: a model directory, /mnt/models, models:/NAME@alias or an s3:// URI."""
        super().__init__(name)
        self.model_ref = model_ref
        self.limits = limits or ServeLimits()
        self.device = device
        self.pipeline = None
        self._loading = True  # until the first load ends
        self._slots = asyncio.Semaphore(self.limits.max_concurrency)
        self._workers = ThreadPoolExecutor(self.limits.max_concurrency, thread_name_prefix="generate")
        self.progress = ProgressBoard()

    @property
    def alive(self) -> bool:
        """Loaded, or its first load still running: liveness. A model stopped (or never loaded
        once its load ended) is a pod to restart."""
        return self.ready or self._loading

    def load(self) -> bool:
        from interactavatar.inference.pipeline import InteractAvatarPipeline
        from interactavatar.io.model_refs import resolve_model_dir

        try:
            self.pipeline = InteractAvatarPipeline.from_pretrained(resolve_model_dir(self.model_ref), self.device)
            self.ready = True
        finally:
            self._loading = False
        return self.ready

    def start(self) -> None:
        """kserve's default marks the model ready here; ready means loaded (see `load`)."""

    def get_input_types(self) -> list[dict]:
        """The v2 model metadata's inputs: every request field, a BYTES tensor of shape [1] (media as
        their file bytes, text and options as UTF-8; docs/serving-api.md says which are required)."""
        return [{"name": name, "datatype": "BYTES", "shape": [1]} for name in FIELDS]

    def get_output_types(self) -> list[dict]:
        """The v2 model metadata's outputs: mp4 files, each a BYTES tensor of shape [1]."""
        return [{"name": name, "datatype": "BYTES", "shape": [1]} for name in OUTPUTS]

    def stop(self) -> None:
        self.ready = False
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _parse(self, payload) -> tuple[GenerationRequest, set[str]]:
        cfg = self.pipeline.cfg
        if isinstance(payload, InferRequest):
            media, text, options_json, requested = fields_from_v2(payload)
            options = GenerationOptions() if options_json is None else parse_options_json(options_json, self.limits, cfg)
        else:
            media, text, options_value = fields_from_v1(payload)
            options, requested = parse_options(options_value, self.limits, cfg), set()
        if options.mode == "motion" and "video" in requested:
            raise refuse("outputs.video", "mode 'motion' makes no video")
        text = parse_text(text, self.limits)
        request = build_request(media, text, options, self.limits, cfg)
        return request, requested

    def _generate(self, request: GenerationRequest, want_motion: bool, cancelled: threading.Event,
                  progress: Progress) -> tuple[dict[str, bytes], dict]:
        """Runs in a worker thread: sampling (stopped at the next step once `cancelled` is set, each
        step reported to `progress`), then the mp4 files (video with the speech muxed in)."""

        def stop_if_cancelled(step: int, steps: int) -> None:
            if cancelled.is_set():
                raise GenerationCancelled(f"stopped after step {step} of {steps}: the client went away")
            progress.step_done(step, steps)

        try:
            with RUNNING.track_inprogress():
                result = self.pipeline(request.image, request.text, request.audio, pose_video=request.pose_video,
                                       object_image=request.object_image, pose_image=request.pose_image,
                                       progress=stop_if_cancelled, **request.options.pipeline_kwargs())
                start = time.perf_counter()
                video, motion = result.to_mp4_bytes(with_motion=want_motion)
        except BaseException as err:
            GENERATIONS.labels("cancelled" if isinstance(err, GenerationCancelled) else "failed").inc()
            raise
        GENERATIONS.labels("completed").inc()
        videos = {name: data for name, data in (("video", video), ("motion", motion)) if data is not None}
        frames = result.video if result.video is not None else result.motion
        metadata = {"num_frames": len(frames), "fps": result.fps, **result.timings,
                    "mux_s": time.perf_counter() - start}
        return videos, metadata

    async def _run(self, request: GenerationRequest, want_motion: bool,
                   progress: Progress) -> tuple[dict[str, bytes], dict]:
        """The generation in a worker thread; cancelled, it stops the worker and waits for it."""
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._workers, self._generate, request, want_motion, cancelled, progress)
        try:
            # Shielded: a cancellation must not drop the future while the worker still runs.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled.set()
            await asyncio.wait({future})
            raise

    async def predict(self, payload, headers: dict | None = None, response_headers: dict | None = None):
        # v1 bodies carry no id; a v2 request's id names its progress (progress.py).
        request_id = payload.id if isinstance(payload, InferRequest) else None
        with self.progress.track(request_id) as progress:
            started = time.perf_counter()
            request, requested = await asyncio.to_thread(self._parse, payload)
            parsed = time.perf_counter()
            want_motion = request.options.return_motion or request.options.mode == "motion" or "motion" in requested
            progress.state = "waiting"
            with WAITING.track_inprogress():
                await self._slots.acquire()
            try:
                admitted = time.perf_counter()
                progress.state = "sampling"
                videos, metadata = await self._run(request, want_motion, progress)
            finally:
                self._slots.release()
        metadata |= {"parse_s": parsed - started, "queue_s": admitted - parsed, "total_s": time.perf_counter() - started}
        metadata = {k: round(v, 4) if isinstance(v, float) else v for k, v in metadata.items()}
        if isinstance(payload, InferRequest):
            return v2_response(payload, self.name, videos, metadata)
        return v1_response(videos, metadata)
