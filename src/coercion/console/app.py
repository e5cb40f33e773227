"""The console's ASGI application: sign-in gate, CSRF check, pages, JSON API, metrics.

Every path but the sign-in page, its static files, ``/healthz`` and
``/metrics`` needs a session: a page redirects to the sign-in page, the API
answers 401. A request that changes something (POST, PUT, PATCH, DELETE)
needs the session's CSRF token in ``X-CSRF-Token`` (403 without it) and,
when it names its origin, an origin of this console; changes need the admin
role (403 for a viewer). The API's OpenAPI document is ``/api/openapi.json``
(for signed-in people; FastAPI's documentation pages, which load scripts from
a CDN, are off).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from coercion import __version__
from coercion.console import api, pages
from coercion.console.exposition import CONTENT_TYPE, exposition
from coercion.console.sessions import COOKIE, CSRF_HEADER
from coercion.console.state import ConsoleState

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: Paths served without a session (the sign-in page, its files and the session API).
_OPEN = ("/signin", "/static/")
_OPEN_API = ("/api/session",)
_SCRAPE = ("/healthz", "/metrics")
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_Next = Callable[[Request], Awaitable[Response]]


def create_app(state: ConsoleState) -> FastAPI:
    """The console for the node *state* describes."""
    app = FastAPI(
        title="coercion console",
        version=__version__,
        description="Read and change the rules of a coercion node; see its traffic.",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.console = state
    static = files("coercion.console") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.get("/healthz", include_in_schema=True, tags=["monitoring"])
    def healthz() -> dict[str, Any]:
        """``ok`` while the node serves a configuration; says whether the directory answers."""
        watcher = state.watcher
        return {
            "status": "ok",
            "directory_reachable": watcher.last_error is None,
            "from_snapshot": watcher.from_snapshot,
        }

    @app.get("/metrics", tags=["monitoring"], response_class=PlainTextResponse)
    def metrics() -> Response:
        """The node's metrics in the Prometheus text format."""
        return Response(exposition(state), media_type=CONTENT_TYPE)

    @app.middleware("http")
    async def gate(request: Request, call_next: _Next) -> Response:
        return await _gate(state, request, call_next)

    return app


async def _gate(state: ConsoleState, request: Request, call_next: _Next) -> Response:
    path = request.url.path
    if path in _SCRAPE:
        client = request.client.host if request.client else None
        if not state.may_scrape(client):
            return PlainTextResponse("not allowed from this address\n", status_code=403)
        return await call_next(request)
    if request.method in _CHANGES and not _same_origin(request):
        return JSONResponse({"detail": "the request comes from another site"}, status_code=403)
    session = state.sessions.get(request.cookies.get(COOKIE))
    request.state.session = session
    if path.startswith(_OPEN) or path in _OPEN_API:
        return await call_next(request)
    if session is None:
        if path.startswith("/api/"):
            return JSONResponse({"detail": "sign in first"}, status_code=401)
        return RedirectResponse("/signin", status_code=303)
    if request.method in _CHANGES:
        if not session.csrf_ok(request.headers.get(CSRF_HEADER)):
            return JSONResponse(
                {"detail": f"missing or wrong {CSRF_HEADER}; reload the page"}, status_code=403
            )
        if not session.admin:
            return JSONResponse({"detail": "only an admin may change this"}, status_code=403)
    return await call_next(request)


def _same_origin(request: Request) -> bool:
    """True unless the request names an Origin (or Referer) of another host and port."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin != "null"
    return urlsplit(origin).netloc == request.headers.get("host", "")
