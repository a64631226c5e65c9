"""Operator routes for the device registry: list, show, desired vs reported, tag, assign, retry, decide."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from edgefleet.hub.api.deps import HubDep, LimitDep, OperatorDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import (
    AppStateOut,
    AssignmentIn,
    AssignmentOut,
    DeviceOut,
    DevicePage,
    DeviceStateOut,
    RetryIn,
    TagUpdate,
    UpdateOut,
    WhyList,
    WhyOut,
)
from edgefleet.hub.services import deployments, device_state, devices, director
from edgefleet.protocol import DeviceId, DeviceStatus, FleetName

router = APIRouter(prefix="/devices", tags=["devices"], responses=ERRORS)
DevicePath = Annotated[DeviceId, Path(description="Device UUID")]


@router.get("", response_model=DevicePage)
def list_devices(
    hub: HubDep,
    operator: OperatorDep,
    limit: LimitDep,
    fleet: Annotated[FleetName | None, Query()] = None,
    status: Annotated[DeviceStatus | None, Query()] = None,
    after: Annotated[DeviceId | None, Query(description="Cursor: the last id of the previous page")] = None,
) -> DevicePage:
    """Devices in id order, a page at a time."""
    found = devices.list_devices(hub, operator, fleet=fleet, status=status, after=after, limit=limit)
    return DevicePage(
        items=[DeviceOut.model_validate(d) for d in found], next_after=found[-1].id if len(found) == limit else None
    )


@router.get("/{device_id}", response_model=DeviceOut)
def show_device(hub: HubDep, operator: OperatorDep, device_id: DevicePath) -> DeviceOut:
    """One device."""
    return DeviceOut.model_validate(devices.show_device(hub, operator, device_id))


@router.get("/{device_id}/state", response_model=DeviceStateOut)
def show_state(hub: HubDep, operator: OperatorDep, device_id: DevicePath) -> DeviceStateOut:
    """Desired beside reported: each app's assignment and reported release, the effective environment, the twin."""
    state = device_state.device_state(hub, operator, device_id)
    return DeviceStateOut(
        device_id=state.device.id,
        status=state.device.status,
        last_seen_at=state.device.last_seen_at,
        apps=[AppStateOut.model_validate(app) for app in state.apps],
        environment=state.environment,
        last_error=state.last_error,
        updates={app: UpdateOut.model_validate(outcome) for app, outcome in state.updates.items()},
        reported=state.device.reported,
    )


@router.patch("/{device_id}/tags", response_model=DeviceOut)
def tag_device(hub: HubDep, operator: OperatorDep, device_id: DevicePath, body: TagUpdate) -> DeviceOut:
    """Set and remove tags (operator)."""
    return DeviceOut.model_validate(
        devices.tag_device(hub, operator, device_id, set_tags=dict(body.set), remove=list(body.remove))
    )


@router.get("/{device_id}/assignments", response_model=list[AssignmentOut])
def list_assignments(hub: HubDep, operator: OperatorDep, device_id: DevicePath) -> list[AssignmentOut]:
    """What each app on the device must run."""
    return [AssignmentOut.model_validate(a) for a in director.list_assignments(hub, operator, device_id)]


@router.post("/{device_id}/assignments", response_model=AssignmentOut)
def assign(hub: HubDep, operator: OperatorDep, device_id: DevicePath, body: AssignmentIn) -> AssignmentOut:
    """Assign APP@VERSION to the device (per app; audited). Older releases need `rollback`."""
    result = director.assign(hub, operator, device_id, app=body.app, version=body.version, rollback=body.rollback)
    return AssignmentOut.model_validate(result)


@router.post("/{device_id}/retry", response_model=list[AssignmentOut])
def retry(
    hub: HubDep, operator: OperatorDep, device_id: DevicePath, body: RetryIn | None = None
) -> list[AssignmentOut]:
    """Have the device try its assigned release again (one app, or all), even where it failed before (audited).

    Bumps each assignment's retry generation, which the director signs into the device's targets.
    """
    bumped = director.retry(hub, operator, device_id, app=None if body is None else body.app)
    return [AssignmentOut.model_validate(a) for a in bumped]


@router.post("/{device_id}/{verb}", response_model=DeviceOut)
def decide(
    hub: HubDep, operator: OperatorDep, device_id: DevicePath, verb: Literal["accept", "reject", "revoke"]
) -> DeviceOut:
    """Accept or reject a pending device, or revoke a device (operator)."""
    return DeviceOut.model_validate(devices.decide(hub, operator, device_id, verb))


@router.get("/{device_id}/why", response_model=WhyList)
def why(hub: HubDep, operator: OperatorDep, device_id: DevicePath) -> WhyList:
    """Per app: what the device is assigned, by whom, and which deployments select it (the winner and the losers)."""
    apps = []
    for reason in deployments.why(hub, operator, device_id):
        chosen = reason.deployment
        apps.append(
            WhyOut(
                app=reason.app,
                assigned=reason.assigned,
                assigned_by=None if reason.assigned_by is None else str(reason.assigned_by),
                deployment=None if chosen is None else chosen.name,
                priority=None if chosen is None else chosen.priority,
                release=None if chosen is None else f"{chosen.app}@{chosen.version}",
                member=reason.member,
                wave=None if reason.wave is None else reason.wave + 1,
                losing=[f"{d.name} (priority {d.priority})" for d in reason.losers],
                explanation=deployments.explain(reason),
            )
        )
    return WhyList(device_id=device_id, apps=apps)
