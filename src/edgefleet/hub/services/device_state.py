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
from datetime import datetime, timedelta
from typing import Any

from edgefleet.hub.context import Hub
from edgefleet.hub.errors import ForbiddenError, NotFoundError
from edgefleet.hub.fleetview import running_of
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
    """What the device must run now, from the database; kept in this process's cache for its next polls.

    Raises:
        ForbiddenError: the device is no longer accepted (revoked while its poll was held).
        NotFoundError: no such device.
    """
    ticket = hub.caches.targets.ticket()
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
    answer = TargetState(device_id=device_id, apps=apps, environment=environment)
    hub.caches.targets.put(device_id, answer, ticket)
    return answer


def cached_target_state(hub: Hub, device_id: str) -> TargetState | None:
    """`target_state` as this process's cache holds it, if fresh and usable (no I/O)."""
    return hub.caches.targets.get(device_id) if hub.caches.usable else None


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


# --- the fleet at a glance (the dashboard's overview and device list) -------------------------

FLEET_STATES = ("online", "offline", "updating", "failed")
"""What an accepted device is doing, as the dashboard counts it; other devices show their registry status."""
_FAILED_OUTCOMES = frozenset({"failed", "rolled-back", "interrupted", "no-space"})
_MAX_RELEASES = 10_000
"""Releases read to learn the apps (the repository's targets hold at most this many)."""


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    """One device as the fleet overview sees it: its state, what it runs and what it is assigned, per app."""

    device: Device
    state: str
    running: dict[str, str]
    assigned: dict[str, str]


@dataclass(frozen=True, slots=True)
class FleetView:
    """Devices in id order with their states; `complete` is False when more exist than were read."""

    devices: list[DeviceSummary]
    complete: bool


def running_versions(reported: Mapping[str, Any]) -> dict[str, str]:
    """App -> version the device reports running (pure; anything malformed counts as not reported)."""
    return {app: running.version for app, running in running_of(reported).items()}


def health_of(
    device: Device,
    assigned: Mapping[str, str],
    outcomes: Mapping[str, tuple[str, str]],
    *,
    now: datetime,
    offline_after: timedelta,
) -> str:
    """A device's state for the overview (pure), first that applies.

    Not accepted: its registry status (pending, rejected, revoked). ``failed``: an app's latest
    update outcome for its assigned release failed (failed, rolled back, interrupted, no space),
    or an app at its assigned release has a service not running or unhealthy. ``offline``: not
    heard from within `offline_after`. ``updating``: an app does not run its assigned release
    yet. Else ``online``.
    """
    if device.status != "accepted":
        return device.status
    running = running_of(device.reported)
    for app, version in assigned.items():
        outcome = outcomes.get(app)
        if outcome is not None and outcome[1] == version and outcome[0] in _FAILED_OUTCOMES:
            return "failed"
        now_running = running.get(app)
        if now_running is not None and now_running.version == version and not now_running.healthy:
            return "failed"
    if device.last_seen_at is None or now - device.last_seen_at > offline_after:
        return "offline"
    if any(app not in running or running[app].version != version for app, version in assigned.items()):
        return "updating"
    return "online"


def fleet_view(hub: Hub, operator: Operator, *, max_devices: int) -> FleetView:
    """Every device (at most `max_devices`, in id order) with its state, releases and assignments (viewer)."""
    authorize(operator, "viewer", action="device.list")
    now = hub.clock()
    devices: list[Device] = []
    with hub.store.transaction(readonly=True) as tx:
        after = None
        while len(devices) <= max_devices:
            want = min(1000, max_devices + 1 - len(devices))
            page = tx.list_devices(fleet=None, status=None, after=after, limit=want)
            devices.extend(page)
            if len(page) < want:
                break
            after = page[-1].id
        apps = sorted({r.app for r in tx.list_releases(app=None, limit=_MAX_RELEASES)})
        assignments = {app: tx.assignments_for_app(app) for app in apps}
        outcomes = {app: tx.outcomes_for_app(app) for app in apps}
    complete = len(devices) <= max_devices
    summaries = []
    for device in devices[:max_devices]:
        assigned = {app: found[device.id][0] for app, found in assignments.items() if device.id in found}
        latest = {app: found[device.id] for app, found in outcomes.items() if device.id in found}
        state = health_of(device, assigned, latest, now=now, offline_after=hub.settings.offline_after)
        summaries.append(
            DeviceSummary(device=device, state=state, running=running_versions(device.reported), assigned=assigned)
        )
    return FleetView(devices=summaries, complete=complete)
