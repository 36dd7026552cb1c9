"""The routes this server adds to kserve's: a web page for endpoint consumers (/ui), the contract
rendered for people (/docs), and a request's progress (/progress/{id}).

The page (static/ui.html) is a client of the documented contract like any other: it reads the
modes, limits and model name from /openapi.json, sends a v2 request with the binary extension, polls
/progress/{id} while the model samples, and plays the mp4 it gets back. /docs renders the same
document offline (FastAPI's Swagger UI would fetch its scripts from a CDN).

Both pages and /openapi.json pass the guard without a token (guard.py, PUBLIC_PAGES): they hold no
data and cost nothing, and a browser cannot add a bearer token to a page it navigates to. The page
sends the token its user types with every request it makes; /progress needs it like the rest.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from starlette.responses import HTMLResponse, JSONResponse

from interactavatar.serve.progress import ProgressBoard

UI_PATH = "/ui"
DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"  # FastAPI's own route (openapi.py writes what it serves)
PUBLIC_PAGES = (UI_PATH, DOCS_PATH, OPENAPI_PATH)
PROGRESS_PATH = "/progress/{request_id}"
# The pages load nothing from elsewhere (the server may be offline, a cluster may have no egress):
# the policy makes the browser refuse any such attempt, so a page that tried would fail its test.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                           "connect-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:")


def _page(name: str):
    """A route answering the static page `name` (read once, at start)."""
    html = (files("interactavatar.serve") / "static" / name).read_text(encoding="utf-8")

    async def page() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                           "Cache-Control": "no-cache"})

    return page


def add_routes(app: FastAPI, progress: ProgressBoard) -> None:
    """/ui, /docs and /progress/{request_id} on `app`, the last reading `progress`."""
    app.add_api_route(UI_PATH, _page("ui.html"), methods=["GET"], response_class=HTMLResponse, tags=["pages"],
                      summary="A web page: upload an image and speech, type the sentence, watch the video")
    app.add_api_route(DOCS_PATH, _page("docs.html"), methods=["GET"], response_class=HTMLResponse, tags=["pages"],
                      summary="This document, rendered for reading (offline)")

    async def request_progress(request_id: str):
        snapshot = progress.snapshot(request_id)
        if snapshot is None:
            return JSONResponse({"error": f"progress/{request_id}: no request with this id is in the model now "
                                          "(not yet read, already answered, or sent without an id)"},
                                status_code=404)
        return snapshot

    app.add_api_route(
        PROGRESS_PATH, request_progress, methods=["GET"], tags=["V2"],
        summary="Where a v2 request named by its `id` stands: parsing, waiting, sampling step k of n, finishing",
        responses={200: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Progress"}}}},
                   404: {"description": "no request with this id is in the model now",
                         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
    )
