"""Device-facing routes: enroll, ask about oneself, renew the certificate, read and report the twin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from edgefleet.hub.api.deps import AnyStatusDeviceDep, CallerDep, DeviceDep, HubDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import TwinOut
from edgefleet.hub.services import devices, enrollment
from edgefleet.protocol import DeviceId, DeviceIdentity, EnrollRequest, RenewRequest, ReportedProperties

router = APIRouter(tags=["device"], responses=ERRORS)
DevicePath = Annotated[DeviceId, Path(description="Device UUID")]


@router.post("/enroll", response_model=DeviceIdentity, status_code=201)
def enroll(hub: HubDep, body: EnrollRequest) -> DeviceIdentity:
    """Exchange an enrollment token and a CSR for a device identity (certificate once accepted)."""
    return enrollment.enroll(hub, body)


@router.get("/device/self", response_model=DeviceIdentity)
def device_self(hub: HubDep, caller: AnyStatusDeviceDep) -> DeviceIdentity:
    """The calling device's status and certificate; a pending device polls this until accepted."""
    return enrollment.identity_of(hub, caller.device)


@router.post("/device/certificate", response_model=DeviceIdentity)
def renew(hub: HubDep, caller: DeviceDep, body: RenewRequest) -> DeviceIdentity:
    """Renew the calling device's certificate before it expires (a new key is allowed)."""
    return devices.renew_certificate(hub, caller, csr=body.csr)


@router.get("/devices/{device_id}/twin", response_model=TwinOut)
def get_twin(hub: HubDep, caller: CallerDep, device_id: DevicePath) -> TwinOut:
    """The device twin: the device itself or any operator may read it."""
    return TwinOut.model_validate(devices.twin(hub, caller, device_id))


@router.patch("/devices/{device_id}/twin/reported", response_model=TwinOut)
def patch_reported(hub: HubDep, caller: CallerDep, device_id: DevicePath, body: ReportedProperties) -> TwinOut:
    """Merge the device's reported properties; only the device itself may write them."""
    return TwinOut.model_validate(devices.update_reported(hub, caller, device_id, body.properties))
