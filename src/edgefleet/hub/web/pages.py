"""The dashboard's read-only pages: overview, devices, one device, deployments, releases, audit log.

Each route reads through the same service functions as the API, with the session's operator
(so the services check the viewer role), and hands plain values to a template.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from edgefleet.hub.errors import NotFoundError
from edgefleet.hub.services import audit, deployments, device_state, devices, releases
from edgefleet.hub.services.operators import authorize
from edgefleet.hub.web.deps import HubDep, SessionDep
from edgefleet.hub.web.render import render
from edgefleet.hub.web.views import STATES, FilterError, overview, page_of, parse_filter, wave_bars
from edgefleet.protocol import DEVICE_ID_PATTERN

router = APIRouter()
DEVICE_AUDIT_SCAN = 5000
"""Newest audit entries searched for a device's trail (the log has no index by device)."""
DEVICE_AUDIT_ROWS = 50
DEPLOYMENT_ROWS = 1000
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
DeploymentKey = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+\-]*$")]
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]


@router.get("/")
def overview_page(request: Request, hub: HubDep, session: SessionDep) -> Response:
    """Devices by state and by release, with a chart, and the deployments in progress."""
    view = device_state.fleet_view(hub, session.operator, max_devices=hub.settings.web_max_scan_devices)
    found = deployments.list_deployments(hub, session.operator, app=None, limit=DEPLOYMENT_ROWS)
    in_progress = [d for d in found if d.state in ("active", "paused")]
    return render(request, "overview.html", session=session, overview=overview(view), deployments=in_progress)


@router.get("/devices")
def device_list(request: Request, hub: HubDep, session: SessionDep, page: PageNumber = 1) -> Response:
    """Devices filtered by tag, state and release, searched, a page at a time."""
    try:
        chosen = parse_filter(request.query_params)
    except FilterError as exc:
        return render(
            request, "devices.html", session=session, status=400, error=str(exc), filters=None, states=STATES, rows=None
        )
    view = device_state.fleet_view(hub, session.operator, max_devices=hub.settings.web_max_scan_devices)
    found = page_of(view, chosen, number=page, size=hub.settings.web_page_size)
    return render(
        request,
        "devices.html",
        session=session,
        error=None,
        filters=chosen,
        states=STATES,
        rows=found,
        complete=view.complete,
    )


@router.get("/devices/{device_id}")
def device_page(
    request: Request, hub: HubDep, session: SessionDep, device_id: Annotated[str, Path(max_length=36)]
) -> Response:
    """One device: desired beside reported, services, last errors, recent events, its audit trail, why."""
    if not _DEVICE_ID_RE.fullmatch(device_id):
        raise NotFoundError("device_not_found", f"no device {device_id[:36]!r}")
    operator = session.operator
    device = devices.show_device(hub, operator, device_id)
    state = device_state.device_state(hub, operator, device_id)
    reasons = [(reason, deployments.explain(reason)) for reason in deployments.why(hub, operator, device_id)]
    authorize(operator, "viewer", action="audit.list")
    subject = f"device:{device_id}"
    trail = audit.entries_about(hub, subject, scan=DEVICE_AUDIT_SCAN, limit=DEVICE_AUDIT_ROWS)
    events = [entry for entry in trail if entry.actor == subject]
    return render(
        request,
        "device.html",
        session=session,
        device=device,
        state=state,
        reasons=reasons,
        trail=trail,
        events=events,
        audit_scan=DEVICE_AUDIT_SCAN,
    )


@router.get("/deployments")
def deployment_list(request: Request, hub: HubDep, session: SessionDep) -> Response:
    """Every deployment, oldest first, with its state and wave."""
    found = deployments.list_deployments(hub, session.operator, app=None, limit=DEPLOYMENT_ROWS)
    return render(request, "deployments.html", session=session, deployments=found)


def deployment_context(hub: HubDep, session: SessionDep, key: str, *, max_age: float = 0.0) -> dict[str, Any]:
    """What the deployment page and its live fragment show (the fragment shares a status up to `max_age` old)."""
    found = deployments.status(hub, session.operator, key, max_age=max_age)
    counts = [(reach, {name: getattr(c, name) for name in c.__slots__}) for reach, c in found.waves]
    return {
        "deployment": found.deployment,
        "targeted": found.targeted,
        "left": found.left,
        "waves": wave_bars(counts, current=found.deployment.wave),
    }


@router.get("/deployments/{key}")
def deployment_page(request: Request, hub: HubDep, session: SessionDep, key: DeploymentKey) -> Response:
    """A deployment with per-wave progress bars that follow the rollout live, and its controls."""
    context = deployment_context(hub, session, key)
    return render(request, "deployment.html", session=session, **context)


@router.get("/releases")
def release_list(request: Request, hub: HubDep, session: SessionDep) -> Response:
    """Published releases: versions, counters, architectures, signer keys."""
    found = releases.list_releases(hub, session.operator, app=None, limit=hub.settings.list_max_items)
    return render(request, "releases.html", session=session, releases=found)


@router.get("/audit")
def audit_page(
    request: Request,
    hub: HubDep,
    session: SessionDep,
    before: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    """The audit log, newest first, a page at a time; the chain's verification loads beside it."""
    authorize(session.operator, "viewer", action="audit.list")
    size = hub.settings.web_page_size
    entries = audit.list_entries(hub, before=before, limit=size)
    older = entries[-1].seq if len(entries) == size and entries[-1].seq > 1 else None
    return render(request, "audit.html", session=session, entries=entries, older=older, before=before)


@router.get("/audit/verify")
def audit_verify(request: Request, hub: HubDep, session: SessionDep) -> Response:
    """The chain's verification (a fragment the audit page loads): it walks the whole log, so it runs apart."""
    authorize(session.operator, "viewer", action="audit.verify")
    return render(request, "_verify.html", session=session, report=audit.verify_log(hub))
