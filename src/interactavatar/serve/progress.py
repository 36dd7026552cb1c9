"""Where each v2 request with an `id` stands while it is in the server: `GET /progress/{id}`.

A generation takes seconds on the tiny model and minutes at paper size; a consumer (the web page at
/ui, or any client that names its requests) can show real progress instead of a spinner. The
sampler already calls back after every step (it is how a cancelled generation stops, predictor.py),
so reporting costs one dictionary write per step.

An entry lives exactly as long as its request is in the predictor, so the board holds at most
`max_concurrency + max_queue` entries (the guard admits no more). Ids are the client's: two
requests in the server under the same id are refused, since one could not tell their progress
apart. Anyone who may call the endpoint may read the progress of an id they know; it tells the
state and step count, nothing of the request's content.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from interactavatar.serve.contract import refuse

# The states a request passes through, in order ("sampling" repeats once per step).
STATES = ("parsing", "waiting", "sampling", "finishing")


@dataclass
class Progress:
    state: str
    started: float
    step: int = 0
    steps: int | None = None  # known from the sampler's first step on

    def snapshot(self, request_id: str) -> dict:
        return {"id": request_id, "state": self.state, "step": self.step, "steps": self.steps,
                "elapsed_s": round(time.monotonic() - self.started, 3)}

    def step_done(self, step: int, steps: int) -> None:
        """The sampler's callback: `step` of `steps` done; after the last one the video is decoded
        and written ("finishing")."""
        self.step, self.steps = step, steps
        self.state = "finishing" if step >= steps else "sampling"


class ProgressBoard:
    """The progress of the requests in the server, by id; written from the event loop and the
    generation threads, read by the progress route."""

    def __init__(self):
        self._entries: dict[str, Progress] = {}
        self._lock = threading.Lock()

    @contextmanager
    def track(self, request_id: str | None) -> Iterator[Progress]:
        """The entry of `request_id` while the block runs (for a request without an id, one that is
        on no board); refused (400, naming `id`) when a request with that id is already in the server."""
        if request_id is None:
            yield Progress("parsing", time.monotonic())
            return
        with self._lock:
            if request_id in self._entries:
                raise refuse("id", f"{request_id!r} is the id of a request already in the server; give each "
                                   "request its own id")
            entry = self._entries[request_id] = Progress("parsing", time.monotonic())
        try:
            yield entry
        finally:
            with self._lock:
                del self._entries[request_id]

    def snapshot(self, request_id: str) -> dict | None:
        """{id, state, step, steps, elapsed_s} of the request, or None when none with that id is in
        the server."""
        with self._lock:
            entry = self._entries.get(request_id)
            return None if entry is None else entry.snapshot(request_id)
