"""The API's error answers: one JSON shape, and one mapping from hub errors to HTTP statuses."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

from edgefleet.hub.errors import HubConfigError, HubError
from edgefleet.protocol import ErrorBody

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer: a stable code and one human sentence."""
    return JSONResponse(ErrorBody(code=code, message=message).model_dump(), status_code=status, headers=headers)


def hub_error_response(exc: HubError) -> JSONResponse:
    """How the API answers a hub error, wherever in the request it was raised."""
    if isinstance(exc, HubConfigError):
        log.error("hub unavailable: %s", exc.message)
        return error_response(503, exc.code, "the hub's database is unavailable; retry later")
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(exc.status, exc.code, exc.message, headers)
