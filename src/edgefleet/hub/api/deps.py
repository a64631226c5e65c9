"""FastAPI dependencies: the hub, the caller (operator or device) and bounded paging parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edgefleet.hub import offload
from edgefleet.hub.context import Hub
from edgefleet.hub.errors import AuthenticationError, BadRequestError
from edgefleet.hub.services import devices, operators
from edgefleet.hub.services.devices import DeviceCaller
from edgefleet.hub.services.operators import API_TOKEN_PREFIX, Operator

_bearer = HTTPBearer(
    auto_error=False,
    description="An operator API token (efa_...) or a device token signed by the device key.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_hub(request: Request) -> Hub:  # async: a plain function would be run in the thread pool
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


def _secret(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("missing_credentials", "send 'Authorization: Bearer <token>'")
    return credentials.credentials


def current_operator(hub: HubDep, credentials: Credentials) -> Operator:
    secret = _secret(credentials)
    if not secret.startswith(API_TOKEN_PREFIX):
        raise AuthenticationError("operator_token_required", "this endpoint needs an operator API token")
    return operators.authenticate(hub, secret)


async def current_device(hub: HubDep, credentials: Credentials) -> DeviceCaller:
    return await _device_caller(hub, credentials, allow_unaccepted=False)


async def current_device_any_status(hub: HubDep, credentials: Credentials) -> DeviceCaller:
    return await _device_caller(hub, credentials, allow_unaccepted=True)


async def current_caller(hub: HubDep, credentials: Credentials) -> Operator | DeviceCaller:
    secret = _secret(credentials)
    if secret.startswith(API_TOKEN_PREFIX):
        return await offload.call(operators.authenticate, hub, secret)
    return await _device_caller(hub, credentials, allow_unaccepted=False)


async def _device_caller(hub: Hub, credentials: Credentials, *, allow_unaccepted: bool) -> DeviceCaller:
    """The device, from this process's cache without leaving the event loop; the database only when not held."""
    secret = _secret(credentials)
    if secret.startswith(API_TOKEN_PREFIX):
        raise AuthenticationError("device_token_required", "this endpoint needs a device token")
    cached = devices.admit_cached(hub, secret, allow_unaccepted=allow_unaccepted)
    if cached is not None:
        return cached
    return await offload.call(devices.admit_loaded, hub, secret, allow_unaccepted=allow_unaccepted)


OperatorDep = Annotated[Operator, Depends(current_operator)]
DeviceDep = Annotated[DeviceCaller, Depends(current_device)]
AnyStatusDeviceDep = Annotated[DeviceCaller, Depends(current_device_any_status)]
CallerDep = Annotated[Operator | DeviceCaller, Depends(current_caller)]


def page_limit(hub: HubDep, limit: Annotated[int, Query(ge=1, le=100_000)] = 100) -> int:
    """The requested page size, capped by the hub's `list_max_items`."""
    return min(limit, hub.settings.list_max_items)


LimitDep = Annotated[int, Depends(page_limit)]


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    """Unknown query parameters are errors, as unknown body fields are: a typo never passes silently."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params.keys()) - known)
    if unknown:
        raise BadRequestError("unknown_query_parameter", f"unknown query parameter(s): {', '.join(unknown)[:200]}")
