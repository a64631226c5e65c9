"""Operator routes for environment variables, per fleet and per device: read (viewer), change (operator, audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from edgefleet.hub.api.deps import HubDep, OperatorDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import DeviceEnvironmentOut, EnvironmentChange, EnvironmentValue, FleetEnvironmentOut
from edgefleet.hub.services import environment
from edgefleet.hub.services.environment import EnvironmentView
from edgefleet.protocol import DeviceId, EnvName, FleetName

router = APIRouter(tags=["environment"], responses=ERRORS)
DevicePath = Annotated[DeviceId, Path(description="Device UUID")]
FleetPath = Annotated[FleetName, Path(description="Fleet name")]
NamePath = Annotated[EnvName, Path(description="Variable name: letters, digits and '_', not starting with a digit")]


def _device_out(view: EnvironmentView) -> DeviceEnvironmentOut:
    return DeviceEnvironmentOut(
        device_id=view.device_id or "",
        fleet=view.fleet,
        environment=view.values,
        fleet_environment=view.fleet_values,
        effective=view.effective,
    )


def _fleet_out(view: EnvironmentView) -> FleetEnvironmentOut:
    return FleetEnvironmentOut(fleet=view.fleet, environment=view.values)


@router.get("/devices/{device_id}/environment", response_model=DeviceEnvironmentOut)
def device_environment(hub: HubDep, operator: OperatorDep, device_id: DevicePath) -> DeviceEnvironmentOut:
    """The device's own variables, its fleet's, and the effective result."""
    return _device_out(environment.show(hub, operator, "device", device_id))


@router.patch("/devices/{device_id}/environment", response_model=DeviceEnvironmentOut)
def change_device_environment(
    hub: HubDep, operator: OperatorDep, device_id: DevicePath, body: EnvironmentChange
) -> DeviceEnvironmentOut:
    """Set and remove several of the device's variables at once (operator; audited)."""
    view = environment.change(hub, operator, "device", device_id, set_values=dict(body.set), unset=list(body.unset))
    return _device_out(view)


@router.put("/devices/{device_id}/environment/{name}", response_model=DeviceEnvironmentOut)
def set_device_variable(
    hub: HubDep, operator: OperatorDep, device_id: DevicePath, name: NamePath, body: EnvironmentValue
) -> DeviceEnvironmentOut:
    """Set one variable on the device (operator; audited)."""
    return _device_out(environment.change(hub, operator, "device", device_id, set_values={name: body.value}, unset=[]))


@router.delete("/devices/{device_id}/environment/{name}", response_model=DeviceEnvironmentOut)
def unset_device_variable(
    hub: HubDep, operator: OperatorDep, device_id: DevicePath, name: NamePath
) -> DeviceEnvironmentOut:
    """Remove one of the device's variables (operator; audited); the fleet's value, if any, applies again."""
    return _device_out(environment.change(hub, operator, "device", device_id, set_values={}, unset=[name]))


@router.get("/fleets/{fleet}/environment", response_model=FleetEnvironmentOut)
def fleet_environment(hub: HubDep, operator: OperatorDep, fleet: FleetPath) -> FleetEnvironmentOut:
    """The variables every device of the fleet gets (unless it sets its own)."""
    return _fleet_out(environment.show(hub, operator, "fleet", fleet))


@router.patch("/fleets/{fleet}/environment", response_model=FleetEnvironmentOut)
def change_fleet_environment(
    hub: HubDep, operator: OperatorDep, fleet: FleetPath, body: EnvironmentChange
) -> FleetEnvironmentOut:
    """Set and remove several of the fleet's variables at once (operator; audited)."""
    view = environment.change(hub, operator, "fleet", fleet, set_values=dict(body.set), unset=list(body.unset))
    return _fleet_out(view)


@router.put("/fleets/{fleet}/environment/{name}", response_model=FleetEnvironmentOut)
def set_fleet_variable(
    hub: HubDep, operator: OperatorDep, fleet: FleetPath, name: NamePath, body: EnvironmentValue
) -> FleetEnvironmentOut:
    """Set one variable for the whole fleet (operator; audited)."""
    return _fleet_out(environment.change(hub, operator, "fleet", fleet, set_values={name: body.value}, unset=[]))


@router.delete("/fleets/{fleet}/environment/{name}", response_model=FleetEnvironmentOut)
def unset_fleet_variable(hub: HubDep, operator: OperatorDep, fleet: FleetPath, name: NamePath) -> FleetEnvironmentOut:
    """Remove one of the fleet's variables (operator; audited)."""
    return _fleet_out(environment.change(hub, operator, "fleet", fleet, set_values={}, unset=[name]))
