"""Rendering pages: one Jinja2 environment per app (autoescaping every value), and the context every page gets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from edgefleet.hub.web.sessions import Session

PREFIX = "/ui"
"""Where the API app mounts the dashboard."""


def _when(value: datetime | None) -> str:
    return "never" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def environment() -> jinja2.Environment:
    """Templates from the package; every value is HTML-escaped unless a template says otherwise (none does)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("edgefleet.hub.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals["prefix"] = PREFIX
    return env


def render_text(request: Request, template: str, *, session: Session | None = None, **context: Any) -> str:
    """A template rendered with the page context: the session (user, role, CSRF token) and whether it may act."""
    env: jinja2.Environment = request.app.state.templates
    return env.get_template(template).render(
        session=session,
        can_act=session is not None and session.can_act,
        csrf=None if session is None else session.csrf,
        path=request.url.path,
        **context,
    )


def render(
    request: Request, template: str, *, session: Session | None = None, status: int = 200, **context: Any
) -> HTMLResponse:
    """A page as an HTML response."""
    return HTMLResponse(render_text(request, template, session=session, **context), status_code=status)
