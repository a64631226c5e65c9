"""A deployment's controls (pause, resume, abort) and its live progress stream (server-sent events).

The controls are forms: each POST must come from the dashboard's own origin and carry the
session's CSRF token, then calls the same service as the API, which checks the operator
role (a viewer's forged request is refused there with 403, and audited).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from edgefleet.hub import offload
from edgefleet.hub.services import deployments
from edgefleet.hub.web import live, sessions
from edgefleet.hub.web.deps import HubDep, SameOrigin, SessionDep
from edgefleet.hub.web.forms import read_form
from edgefleet.hub.web.pages import DeploymentKey, deployment_context
from edgefleet.hub.web.render import PREFIX, render_text
from edgefleet.hub.web.security import CSRF_FIELD, check_token

router = APIRouter()
Verb = Literal["pause", "resume", "abort"]


@router.post("/deployments/{key}/{verb}", dependencies=[SameOrigin])
async def control(
    request: Request, hub: HubDep, session: SessionDep, key: DeploymentKey, verb: Annotated[Verb, Path()]
) -> Response:
    """Pause, resume or abort (with ``rollback=1``, rolling back) a deployment, then show it again."""
    form = await read_form(request, max_bytes=hub.settings.web_max_form_bytes)
    check_token(form.get(CSRF_FIELD), session.csrf)
    operator = session.operator
    if verb == "pause":
        found = await offload.call(deployments.pause, hub, operator, key)
    elif verb == "resume":
        found = await offload.call(deployments.resume, hub, operator, key)
    else:
        rollback = form.get("rollback") in ("1", "on", "true")
        found = await offload.call(deployments.abort, hub, operator, key, roll_back=rollback)
    return RedirectResponse(f"{PREFIX}/deployments/{found.id}", status_code=303)


@router.get("/deployments/{key}/live")
def live_progress(request: Request, hub: HubDep, key: DeploymentKey) -> Response:
    """The deployment's progress fragment as server-sent events (``event: progress``) while it changes.

    Neither the stream nor its reconnections count as a use of the session: an open page
    alone does not keep a session from its idle expiry.
    """
    cookie = request.cookies.get(sessions.COOKIE)
    session = sessions.resolve(hub, cookie, touch=False)
    deployment_context(hub, session, key)  # 404 now rather than an empty stream

    settings = hub.settings

    def fragment() -> str:
        current = sessions.resolve(hub, cookie, touch=False)  # logout, expiry or a revoked token ends it
        # A live view: a status another viewer had computed since this stream last looked will do.
        context = deployment_context(hub, current, key, max_age=settings.web_stream_interval_seconds)
        return render_text(request, "_progress.html", session=current, **context)

    body = live.stream(
        request.app.state.stream_slots,
        fragment,
        name="progress",
        interval=settings.web_stream_interval_seconds,
        lifetime=settings.web_stream_max_seconds,
    )
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)
