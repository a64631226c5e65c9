"""FastAPI dependencies of the dashboard: the hub, the session behind the cookie, and the request's origin."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from edgefleet.hub.context import Hub
from edgefleet.hub.web import sessions
from edgefleet.hub.web.security import check_origin
from edgefleet.hub.web.sessions import Session


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


def current_session(request: Request, hub: HubDep) -> Session:
    """The live session of the request's cookie; `AuthenticationError` (sent to the login page) otherwise."""
    return sessions.resolve(hub, request.cookies.get(sessions.COOKIE))


SessionDep = Annotated[Session, Depends(current_session)]


def own_origin(request: Request, hub: Hub) -> str:
    """The dashboard's origin: the configured public one, else the scheme and Host of the request."""
    return hub.settings.web_origin or f"{request.url.scheme}://{request.url.netloc}"


def same_origin(request: Request, hub: HubDep) -> None:
    """Refuse (`CsrfError`) a state-changing request that another site's page sent."""
    check_origin(
        origin=request.headers.get("origin"), referer=request.headers.get("referer"), expected=own_origin(request, hub)
    )


SameOrigin = Depends(same_origin)
