"""The endpoint's door: what a request must pass before kserve sees it, and what happens when its
client goes away.

One ASGI middleware in front of every route kserve registers, because these decisions come before
FastAPI reads a body and must hold whatever route a request names:

- the health probes (`/v2/health/live`, `/v2/health/ready`) always pass, so that Kubernetes can
  probe without a token, and so do GETs of the public pages (the web page /ui, /docs and
  /openapi.json: pages.py), which hold no data and which a browser loads without a token;
- with a bearer token configured (`TokenFile`), every other request needs
  `Authorization: Bearer <token>` (401 otherwise);
- the model repository API (`/v2/repository/...`) is refused (403): kserve's unload takes the only
  model out for good (its load cannot bring it back), and nothing here needs it; the routes kserve
  registers for what this model does not offer (`:explain`, `/versions/...`) are 404, not kserve's
  501, a server error any client could raise at will;
- a POST (an inference request, or anything else with a body) is admitted while the server holds
  fewer than `max_concurrency + max_queue` of them and its client (the peer address) fewer than
  `max_per_client` (429 with Retry-After otherwise). The count starts before the body is read, so
  it bounds the bodies held and the media decoded at once, not only the generations;
- its body is read here, whole, before the app runs: over `max_payload_bytes` is 413 (declared or
  counted as it arrives), not all there within `body_timeout_s` is 408, so a stalled sender holds
  its place for a bounded time;
- once the body is in, the connection is watched: when the client goes away before its response
  starts, the request is cancelled, so that a queued request leaves the queue and a running
  generation stops at its next sampling step (predictor.py), and its place is freed.

The peer address is the client as the server sees it: behind a proxy every client shares the
proxy's address, so set `max_per_client` with that in mind.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
from pathlib import Path

from starlette.responses import JSONResponse

from interactavatar.serve.contract import ServeLimits
from interactavatar.serve.metrics import ABANDONED, REFUSED
from interactavatar.serve.pages import PUBLIC_PAGES

logger = logging.getLogger(__name__)

PROBES = ("/v2/health/live", "/v2/health/ready")
REPOSITORY_PREFIX = "/v2/repository"
UNSERVED = (":explain", "/versions/")  # explanations and model versions: kserve routes, not offered here
# A client told 429 may retry after about one generation; this is a hint, not a promise.
RETRY_AFTER_S = 30


class TokenFile:
    """A bearer token kept in a file (a mounted Kubernetes Secret). The file is read again when it
    changes, so a rotated Secret takes effect without a restart; while it is missing or empty every
    request is refused (fail closed)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._stamp: tuple | None = None
        self._token = b""
        self.current()  # a missing, empty or non-ASCII file stops the server at start, not at the first request

    def current(self) -> bytes:
        """The token as the file holds it now (surrounding whitespace dropped); ValueError naming the
        file when it cannot be read or holds no token."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                token = self.path.read_bytes().strip()
                if not token or not token.isascii() or any(c <= 32 or c == 127 for c in token):
                    raise ValueError(f"{self.path}: holds no token (one line of visible ASCII characters)")
                self._token, self._stamp = token, stamp
        except OSError as err:
            raise ValueError(f"{self.path}: cannot read the token file ({err.strerror})") from None
        return self._token

    def admits(self, authorization: bytes | None) -> bool:
        """Whether an Authorization header value carries the token (compared in constant time)."""
        scheme, _, presented = (authorization or b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        try:
            expected = self.current()
        except ValueError as err:
            logger.error("refusing every request: %s", err)
            return False
        return hmac.compare_digest(presented.strip(), expected)


class Refusal(Exception):
    """A request the guard answers itself: the status, an error naming what is at fault, and the
    metrics label."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


class ClientGone(Exception):
    """The client disconnected while its body was being read."""


class RequestGuard:
    """ASGI middleware: authentication, admission, body size and time limits, disconnects."""

    def __init__(self, app, limits: ServeLimits, token: TokenFile | None = None):
        self.app, self.limits, self.token = app, limits, token
        self.capacity = limits.max_concurrency + limits.max_queue
        self.in_flight = 0
        self.per_client: collections.Counter[str] = collections.Counter()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in PROBES or (
                scope["method"] == "GET" and scope["path"] in PUBLIC_PAGES):
            return await self.app(scope, receive, send)
        client = scope["client"][0] if scope.get("client") else "unknown"
        try:
            self._check_door(scope)
            if scope["method"] == "POST":
                self._admit(client)
        except Refusal as refusal:
            return await self._refuse(refusal, scope, receive, send)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:  # admitted: counted in until its answer
            try:
                body = await self._read_body(scope, receive)
            except Refusal as refusal:
                return await self._refuse(refusal, scope, receive, send)
            except ClientGone:
                ABANDONED.inc()
                return
            await self._run_watched(scope, receive, send, body)
        finally:
            self.in_flight -= 1
            self.per_client[client] -= 1
            if not self.per_client[client]:
                del self.per_client[client]

    def _check_door(self, scope) -> None:
        if self.token is not None:
            authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
            if not self.token.admits(authorization):
                raise Refusal(401, "authorization: missing or wrong bearer token", "unauthorized",
                              {"WWW-Authenticate": "Bearer"})
        if scope["path"].startswith(REPOSITORY_PREFIX):
            raise Refusal(403, f"{scope['path']}: the model repository API is disabled (this server serves one "
                               "model, loaded at start; unloading it would take the endpoint down)", "repository")
        if any(part in scope["path"] for part in UNSERVED):
            raise Refusal(404, f"{scope['path']}: not served here (no explanations, no model versions)", "unserved")

    def _admit(self, client: str) -> None:
        """Counts the request in, or refuses it (429) when the server or its client is full."""
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if self.in_flight >= self.capacity:
            raise Refusal(429, f"server: {self.in_flight} requests are already running or queued; retry later",
                          "overloaded", retry)
        if self.per_client[client] >= self.limits.max_per_client:
            raise Refusal(429, f"client {client}: {self.per_client[client]} requests of yours are already in the "
                               f"server, the most one client may have; retry later", "client_limit", retry)
        self.in_flight += 1
        self.per_client[client] += 1

    async def _read_body(self, scope, receive) -> bytes:
        """The whole body, within the size and time limits."""
        limit = self.limits.max_payload_bytes
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks, received = [], 0
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    received += len(chunk)
                    if received > limit:
                        raise _too_large(received, limit)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise Refusal(408, f"body: {received} bytes arrived in {self.limits.body_timeout_s:g} s, not the whole "
                               "body; send it faster or raise --body-timeout-s", "body_timeout") from None

    async def _run_watched(self, scope, receive, send, body: bytes) -> None:
        """The app on the body read, cancelled if the client goes away before its response starts."""
        gone = asyncio.Event()
        delivered, started = False, False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        app = asyncio.ensure_future(self.app(scope, replay, watched_send))
        # With the body read, the server's next message for this request is its disconnect (it also
        # comes once the response is complete, which `started` tells apart).
        watcher = asyncio.ensure_future(receive())
        try:
            await asyncio.wait({app, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not app.done() and not started:
                gone.set()
                ABANDONED.inc()
                app.cancel()
                await asyncio.wait({app})
                if app.cancelled():
                    return
            await app
        finally:
            watcher.cancel()
            if not app.done():
                app.cancel()

    async def _refuse(self, refusal: Refusal, scope, receive, send) -> None:
        """Answers for the app. The connection closes after the answer: whatever is left of the
        body is not read, and a client refused has no reason to keep it open."""
        REFUSED.labels(refusal.reason).inc()
        response = JSONResponse({"error": refusal.message}, status_code=refusal.status,
                                headers=refusal.headers | {"Connection": "close"})
        await response(scope, receive, send)


def _too_large(size: int, limit: int) -> Refusal:
    return Refusal(413, f"body: {size} bytes or more is over the limit of {limit} bytes", "payload_too_large")
