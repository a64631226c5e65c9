"""Device-facing routes: enroll, ask about oneself, renew the certificate, read and report the twin."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from edgefleet.hub.api.deps import AnyStatusDeviceDep, CallerDep, DeviceDep, HubDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import TwinOut
from edgefleet.hub.services import devices, enrollment
from edgefleet.protocol import DeviceId, DeviceIdentity, EnrollRequest, RenewRequest, ReportedProperties

router = APIRouter(tags=["device"], responses=ERRORS)
DevicePath = Annotated[DeviceId, Path(description="Device UUID")]
LONG_POLL_INTERVAL = 1.0
"""How often a held request re-reads the registry (seconds)."""


@router.post("/enroll", response_model=DeviceIdentity, status_code=201)
def enroll(hub: HubDep, body: EnrollRequest) -> DeviceIdentity:
    """Exchange an enrollment token and a CSR for a device identity (certificate once accepted)."""
    return enrollment.enroll(hub, body)


@router.get(
    "/device/self",
    response_model=DeviceIdentity,
    responses={304: {"description": "Unchanged during the whole wait (If-None-Match matched)"}},
)
async def device_self(
    hub: HubDep,
    caller: AnyStatusDeviceDep,
    response: Response,
    wait: Annotated[float, Query(ge=0, le=3600, description="Long-poll: seconds to wait for a change")] = 0,
    if_none_match: Annotated[str | None, Header(max_length=128)] = None,
) -> DeviceIdentity | Response:
    """The calling device's status and certificate; a pending device long-polls this until accepted.

    With `If-None-Match` set to the ETag of its last answer and `wait`, the hub holds the
    request until the identity changes or the wait (capped by `long_poll_max_seconds`) ends.
    """
    identity = enrollment.identity_of(hub, caller.device)
    deadline = time.monotonic() + min(wait, hub.settings.long_poll_max_seconds)
    while if_none_match == _etag(identity):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Response(status_code=304, headers={"ETag": if_none_match})
        await asyncio.sleep(min(LONG_POLL_INTERVAL, remaining))
        device = await run_in_threadpool(devices.reload, hub, caller.device.id)
        identity = enrollment.identity_of(hub, device)
    response.headers["ETag"] = _etag(identity)
    return identity


def _etag(identity: DeviceIdentity) -> str:
    return '"' + hashlib.sha256(identity.model_dump_json().encode()).hexdigest()[:32] + '"'


@router.post("/device/certificate", response_model=DeviceIdentity)
def renew(hub: HubDep, caller: DeviceDep, body: RenewRequest) -> DeviceIdentity:
    """Renew the calling device's certificate before it expires (a new key is allowed)."""
    return devices.renew_certificate(hub, caller, csr=body.csr, key_change_proof=body.key_change_proof)


@router.get("/devices/{device_id}/twin", response_model=TwinOut)
def get_twin(hub: HubDep, caller: CallerDep, device_id: DevicePath) -> TwinOut:
    """The device twin: the device itself or any operator may read it."""
    return TwinOut.model_validate(devices.twin(hub, caller, device_id))


@router.patch("/devices/{device_id}/twin/reported", response_model=TwinOut)
def patch_reported(hub: HubDep, caller: CallerDep, device_id: DevicePath, body: ReportedProperties) -> TwinOut:
    """Merge the device's reported properties; only the device itself may write them."""
    return TwinOut.model_validate(devices.update_reported(hub, caller, device_id, body.properties))
