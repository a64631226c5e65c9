"""Device-facing routes: enroll, ask about oneself, poll the target state, renew the certificate, the twin, events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from edgefleet.hub import offload
from edgefleet.hub.api import longpoll
from edgefleet.hub.api.deps import AnyStatusDeviceDep, CallerDep, DeviceDep, HubDep
from edgefleet.hub.api.longpoll import NOT_MODIFIED, IfNoneMatch, Wait
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import TwinOut
from edgefleet.hub.services import device_state, devices, enrollment, events
from edgefleet.hub.services.devices import DeviceCaller
from edgefleet.protocol import (
    DeviceEvents,
    DeviceId,
    DeviceIdentity,
    EnrollRequest,
    EventsAck,
    RenewRequest,
    ReportedProperties,
    TargetState,
)

router = APIRouter(tags=["device"], responses=ERRORS)
TARGET = "/device/target"
REPORTED = "/devices/{device_id}/twin/reported"
EVENTS = "/device/events"
"""The routes `api.fastlane` answers itself (through the same service functions) when a request is plain."""
DevicePath = Annotated[DeviceId, Path(description="Device UUID")]


@router.post("/enroll", response_model=DeviceIdentity, status_code=201)
def enroll(hub: HubDep, body: EnrollRequest) -> DeviceIdentity:
    """Exchange an enrollment token and a CSR for a device identity (certificate once accepted)."""
    return enrollment.enroll(hub, body)


@router.get("/device/self", response_model=DeviceIdentity, responses=NOT_MODIFIED)
async def device_self(
    hub: HubDep,
    caller: AnyStatusDeviceDep,
    response: Response,
    wait: Wait = 0,
    if_none_match: IfNoneMatch = None,
) -> DeviceIdentity | Response:
    """The calling device's status and certificate; a pending device long-polls this until accepted.

    With `If-None-Match` set to the ETag of its last answer and `wait`, the hub holds the
    request until the identity changes or the wait (capped by `long_poll_max_seconds`) ends.
    """

    def read() -> DeviceIdentity:
        return enrollment.identity_of(hub, devices.reload(hub, caller.device.id))

    answer, tag = await longpoll.settle(
        read,
        notifier=hub.notifier,
        device_id=caller.device.id,
        first=enrollment.identity_of(hub, caller.device),
        if_none_match=if_none_match,
        wait=wait,
        max_seconds=hub.settings.long_poll_max_seconds,
    )
    return longpoll.respond(response, answer, tag, if_none_match)


@router.get(TARGET, response_model=TargetState, responses=NOT_MODIFIED)
async def device_target(
    hub: HubDep,
    caller: DeviceDep,
    response: Response,
    wait: Wait = 0,
    if_none_match: IfNoneMatch = None,
) -> TargetState | Response:
    """What the calling device must run: its assignments per app and its effective environment.

    A hint only: the agent acts on the signed director metadata, which states the same.
    With `If-None-Match` and `wait`, the hub holds the request until either changes or the
    wait (capped by `long_poll_max_seconds`) ends, then answers 304 with no body.
    """

    def read() -> TargetState:
        return device_state.target_state(hub, caller.device.id)

    def peek() -> TargetState | None:
        return device_state.cached_target_state(hub, caller.device.id)

    answer, tag = await longpoll.settle(
        read,
        notifier=hub.notifier,
        device_id=caller.device.id,
        peek=peek,
        if_none_match=if_none_match,
        wait=wait,
        max_seconds=hub.settings.long_poll_max_seconds,
    )
    return longpoll.respond(response, answer, tag, if_none_match)


@router.post("/device/certificate", response_model=DeviceIdentity)
def renew(hub: HubDep, caller: DeviceDep, body: RenewRequest) -> DeviceIdentity:
    """Renew the calling device's certificate before it expires (a new key is allowed)."""
    return devices.renew_certificate(hub, caller, csr=body.csr, key_change_proof=body.key_change_proof)


@router.post(EVENTS, response_model=EventsAck)
def device_events(hub: HubDep, caller: DeviceDep, body: DeviceEvents) -> EventsAck:
    """Record the calling device's buffered events, oldest first; answers the highest `seq` recorded.

    Idempotent: events whose `seq` is not above the last one recorded are skipped, so a
    batch re-sent after a lost answer is recorded once. Each new event is audited with the
    device as actor and kept as the device's latest update outcome for its app.
    """
    return events.record_events(hub, caller, body)


@router.get("/devices/{device_id}/twin", response_model=TwinOut)
def get_twin(hub: HubDep, caller: CallerDep, device_id: DevicePath) -> TwinOut:
    """The device twin: the device itself or any operator may read it."""
    return TwinOut.model_validate(devices.twin(hub, caller, device_id))


@router.patch(REPORTED, response_model=TwinOut)
async def patch_reported(hub: HubDep, caller: CallerDep, device_id: DevicePath, body: ReportedProperties) -> TwinOut:
    """Merge the device's reported state (`protocol.ReportedState`); only the device itself may write it.

    A report that changes nothing is answered from the device's record as it is, without a write.
    """
    patch = body.properties.patch()
    if isinstance(caller, DeviceCaller) and (same := devices.unchanged_by_report(caller, device_id, patch)):
        return TwinOut.model_validate(same)
    updated = await offload.call(devices.update_reported, hub, caller, device_id, patch)
    return TwinOut.model_validate(updated)
