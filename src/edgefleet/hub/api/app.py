"""The hub's FastAPI application factory and its one mapping from errors to HTTP answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgefleet import __version__
from edgefleet.hub import offload
from edgefleet.hub.api.answers import error_response, hub_error_response
from edgefleet.hub.api.deps import reject_unknown_query
from edgefleet.hub.api.fastlane import DeviceFastLane
from edgefleet.hub.api.gcpauses import PauseMetrics, export_pauses
from edgefleet.hub.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from edgefleet.hub.api.routes import (
    audit,
    deployments,
    device,
    devices,
    environment,
    repository,
    system,
    tokens,
    tuf,
    users,
)
from edgefleet.hub.context import Hub
from edgefleet.hub.errors import HubError
from edgefleet.hub.web import PREFIX as WEB_PREFIX
from edgefleet.hub.web import create_web_app
from edgefleet.protocol import API_PREFIX

log = logging.getLogger(__name__)

NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

_HTTP_CODES = {
    400: "malformed_json",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    415: "unsupported_media_type",
}


async def _hub_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HubError):
        raise exc
    return hub_error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        raise exc
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "request body is not valid JSON")
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "request"
    return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}"[:300])


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error; see the hub log")


async def _to_dashboard() -> RedirectResponse:
    """The hub's root is the dashboard."""
    return RedirectResponse(f"{WEB_PREFIX}/", status_code=307)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the app serves: last-seen writes, collector pauses into /metrics, on PostgreSQL the change listener.

    The listener (of every process's changes) wakes held device polls and keeps the device caches true; the caches are
    used only while it listens (`DeviceCaches.use_while`).
    """
    hub: Hub = app.state.hub
    listener = hub.listen()
    app.state.listener = listener
    writer = asyncio.create_task(_write_last_seen(hub), name="edgefleet-last-seen")
    pauses = asyncio.create_task(export_pauses(app.state.gc_pauses), name="edgefleet-gc-pauses")
    try:
        yield
    finally:
        for task in (writer, pauses):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await offload.call(_flush, hub)
        except HubError as exc:
            log.warning("could not write when %d devices were last seen: %s", hub.last_seen.pending(), exc)
        if listener is not None:
            await offload.call(listener.stop)


def _flush(hub: Hub) -> None:
    """Write the devices heard from, and those that fetched new director targets (blocking)."""
    hub.flush_last_seen()
    hub.flush_fetches()


async def _write_last_seen(hub: Hub) -> None:
    """Write the devices heard from every `last_seen_flush_seconds`, and those that fetched every `fetch_flush_seconds`.

    A fetch is a rollout member beginning its download, which a paced rollout waits for before
    it tells the next device, so fetches are written sooner, when there are some (checked in
    memory). A failed write is tried again next time; after a failed write of fetches alone,
    the next waits `last_seen_flush_seconds` (a database away is not asked twice a second).
    """
    settings = hub.settings
    now = time.monotonic()
    seen_due, fetch_due = now + settings.last_seen_flush_seconds, now + settings.fetch_flush_seconds
    while True:
        await asyncio.sleep(max(0.0, min(seen_due, fetch_due) - time.monotonic()))
        now = time.monotonic()
        if now >= seen_due:
            seen_due, fetch_due = now + settings.last_seen_flush_seconds, now + settings.fetch_flush_seconds
            await _write(hub, _flush, "when devices were last seen, and which fetched new targets")
        elif hub.fetches.pending():
            fetch_due = now + settings.fetch_flush_seconds
            if not await _write(hub, Hub.flush_fetches, "which devices fetched new targets"):
                fetch_due = now + settings.last_seen_flush_seconds
        else:
            fetch_due = now + settings.fetch_flush_seconds


async def _write(hub: Hub, write: Callable[[Hub], object], what: str) -> bool:
    """`write(hub)` in the thread pool; False when it failed (logged)."""
    try:
        await offload.call(write, hub)
    except HubError as exc:
        log.warning("could not write %s: %s", what, exc)
    except Exception:
        log.exception("writing %s failed", what)
    else:
        return True
    return False


def create_app(hub: Hub, *, metrics_dir: Path | None = None, fast_lane: bool = True) -> FastAPI:
    """Build the API for one hub; all state hangs off `app.state`, nothing is global.

    `metrics_dir` is prometheus-client's multiprocess directory when several processes serve
    the hub (`lifecycle.serve`): `/metrics` then adds up every process's metrics found there.
    `fast_lane` off sends every device request through the routes (`DeviceFastLane`), so tests
    can compare the two.
    """
    app = FastAPI(
        title="edgefleet hub",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(reject_unknown_query)],
        lifespan=_lifespan,
        # The hub's metrics are its own Prometheus /metrics; FastAPI's OpenTelemetry hooks would
        # look up providers (and the environment) on every request.
        telemetry=NO_TELEMETRY,
    )
    app.state.hub = hub
    app.state.metrics = CollectorRegistry()
    app.state.gc_pauses = PauseMetrics(app.state.metrics)
    app.state.metrics_dir = metrics_dir
    app.include_router(system.router)
    for module in (device, devices, deployments, environment, tokens, users, audit, repository, tuf):
        app.include_router(module.router, prefix=API_PREFIX)
    app.add_api_route("/", _to_dashboard, include_in_schema=False)
    app.state.web = create_web_app(hub)
    app.mount(WEB_PREFIX, app.state.web)
    app.add_exception_handler(HubError, _hub_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    if fast_lane:
        app.add_middleware(DeviceFastLane, hub=hub)
    app.add_middleware(MetricsMiddleware, registry=app.state.metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=hub.settings.max_body_bytes,
        larger={
            f"{API_PREFIX}/repository/artifacts/": hub.settings.max_artifact_bytes,
            f"{API_PREFIX}/repository/targets": hub.settings.max_targets_bytes,
            f"{API_PREFIX}/device/events": hub.settings.max_events_bytes,
        },
    )
    return app
