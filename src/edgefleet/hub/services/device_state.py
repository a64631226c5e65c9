"""What a device must run beside what it says it runs: the device's target-state poll and the operator's view.

`target_state` answers the agent's long-poll: its assignments and effective environment,
only a hint to fetch and verify the signed director metadata again. `device_state` puts
each app's assignment beside what the device reported in its twin (``reported.apps``:
app -> {"version", "services"}; ``reported.last_error``) and the latest update outcome per
app from the device's events; `compare` does that pairing as a pure function, reading the
device-written twin defensively.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgefleet.hub.context import Hub
from edgefleet.hub.errors import ForbiddenError, NotFoundError
from edgefleet.hub.records import Assignment, Device, UpdateOutcome
from edgefleet.hub.services.environment import effective_for
from edgefleet.hub.services.operators import Operator, authorize
from edgefleet.protocol import AppTarget, TargetState


@dataclass(frozen=True, slots=True)
class AppState:
    """One app: the release assigned to it and the release and services the device reports."""

    app: str
    desired: str | None
    release_counter: int | None
    rollback: bool
    reported: str | None
    services: dict[str, Any]

    @property
    def in_sync(self) -> bool:
        return self.desired is not None and self.desired == self.reported


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device's desired state (assignments, effective environment) and what it reported."""

    device: Device
    apps: list[AppState]
    environment: dict[str, str]
    last_error: Any
    updates: dict[str, UpdateOutcome]
    """Per app, the latest update outcome from the device's events."""


def compare(assignments: Sequence[Assignment], reported: Mapping[str, Any]) -> list[AppState]:
    """Pair each app's assignment with the device's report, in app order (pure).

    Apps only assigned (not yet reported) and only reported (no longer assigned) appear too.
    Whatever in the report is not the expected shape counts as not reported.
    """
    raw_apps = reported.get("apps")
    reported_apps: dict[str, Any] = raw_apps if isinstance(raw_apps, dict) else {}
    assigned = {a.app: a for a in assignments}
    states = []
    for app in sorted(set(assigned) | {name for name in reported_apps if isinstance(name, str)}):
        entry = reported_apps.get(app)
        entry = entry if isinstance(entry, dict) else {}
        version = entry.get("version")
        services = entry.get("services")
        assignment = assigned.get(app)
        states.append(
            AppState(
                app=app,
                desired=None if assignment is None else assignment.version,
                release_counter=None if assignment is None else assignment.release_counter,
                rollback=False if assignment is None else assignment.rollback,
                reported=version if isinstance(version, str) else None,
                services=services if isinstance(services, dict) else {},
            )
        )
    return states


def target_state(hub: Hub, device_id: str) -> TargetState:
    """What the device must run now; read again on every re-check of a held poll.

    Raises:
        ForbiddenError: the device is no longer accepted (revoked while its poll was held).
        NotFoundError: no such device.
    """
    with hub.store.transaction(readonly=True) as tx:
        device = tx.get_device(device_id)
        if device is None:
            raise NotFoundError("device_not_found", f"no device {device_id}")
        if device.status != "accepted":
            raise ForbiddenError(f"device_{device.status}", f"this device is {device.status}")
        assignments = tx.list_assignments(device_id)
        environment = effective_for(tx, device)
    apps = {
        a.app: AppTarget(version=a.version, release_counter=a.release_counter, rollback=a.rollback, retry=a.retry)
        for a in assignments
    }
    return TargetState(device_id=device_id, apps=apps, environment=environment)


def device_state(hub: Hub, operator: Operator, device_id: str) -> DeviceState:
    """Desired (assignments, effective environment) beside reported (twin) for one device (viewer).

    Raises:
        NotFoundError: no such device.
    """
    authorize(operator, "viewer", action="device.state")
    with hub.store.transaction(readonly=True) as tx:
        device = tx.get_device(device_id)
        if device is None:
            raise NotFoundError("device_not_found", f"no device {device_id}")
        assignments = tx.list_assignments(device_id)
        environment = effective_for(tx, device)
        updates = {outcome.app: outcome for outcome in tx.list_update_outcomes(device_id)}
    return DeviceState(
        device=device,
        apps=compare(assignments, device.reported),
        environment=environment,
        last_error=device.reported.get("last_error"),
        updates=updates,
    )
