"""The dashboard's application: its routes, static files, security headers, and errors answered as pages.

The API's app factory mounts it at `PREFIX`. Errors are converted here, at the boundary: a
missing or ended session sends the browser to the login page; any other refusal is a page
that says why, with the status the API would answer; nothing reaches the browser as a 5xx
unless the hub itself failed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefleet.hub.context import Hub
from edgefleet.hub.errors import AuthenticationError, HubConfigError, HubError
from edgefleet.hub.web import controls, login, pages, sessions
from edgefleet.hub.web.errors import WebError
from edgefleet.hub.web.live import StreamSlots
from edgefleet.hub.web.render import PREFIX, environment, render

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the dashboard's security headers to every answer (also streams and static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                static = scope["path"].startswith(("/static/", f"{PREFIX}/static/"))
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _page(request: Request, status: int, message: str) -> Response:
    if request.url.path.endswith("/live"):
        return PlainTextResponse(message, status_code=status)
    return render(request, "error.html", status=status, status_code=status, message=message)


async def _hub_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HubError):
        raise exc
    if isinstance(exc, HubConfigError):
        log.error("hub unavailable: %s", exc.message)
        return _page(request, 503, "The hub's database is unavailable; try again in a moment.")
    if isinstance(exc, AuthenticationError):
        if request.url.path.endswith("/live"):
            return PlainTextResponse(exc.message, status_code=401)
        target = f"{PREFIX}/login?reason={quote(exc.code)}"
        if request.method == "GET":
            path = request.url.path if request.url.path.startswith(f"{PREFIX}/") else f"{PREFIX}{request.url.path}"
            target += "&next=" + quote(path, safe="/")
        response = RedirectResponse(target, status_code=303)
        if exc.code != "login_required":
            login.clear_cookie(response, sessions.COOKIE)
        return response
    return _page(request, exc.status, exc.message)


async def _web_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, WebError):
        raise exc
    return _page(request, exc.status, exc.message)


async def _validation_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):
        raise exc
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("path", "query")) or "request"
    return _page(request, 400, f"{where}: {first.get('msg', 'invalid')}"[:300])


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    message = "No such page." if exc.status_code == 404 else str(exc.detail)
    return _page(request, exc.status_code, message)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in the dashboard", exc_info=exc)
    return _page(request, 500, "Internal error; see the hub's log.")


def create_web_app(hub: Hub) -> FastAPI:
    """The dashboard for one hub; its state hangs off `app.state`, nothing is global."""
    app = FastAPI(
        title="edgefleet dashboard",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},  # as the API's (`api.app.NO_TELEMETRY`)
    )
    app.state.hub = hub
    app.state.templates = environment()
    app.state.stream_slots = StreamSlots(hub.settings.web_max_streams)
    for module in (login, pages, controls):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(HubError, _hub_error)
    app.add_exception_handler(WebError, _web_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(SecurityHeaders)
    return app


__all__ = ["PREFIX", "create_web_app"]
