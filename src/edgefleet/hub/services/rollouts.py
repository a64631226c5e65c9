"""The rollout scheduler: observe deployments and their devices, ask `edgefleet.rollout` what to do, do it.

One pass (`tick`) runs in one transaction under the rollout lock, so two hub processes on
one PostgreSQL never both act on the same deployment: the second finds the lock taken and
skips its pass. Each assignment also inserts the device's member row, whose primary key
refuses a second one, so no device is assigned twice by a rollout even if the lock failed.

Which deployment a device follows, per app: the highest-priority deployment that is not
finished and whose target selects the device (its tags, plus ``fleet``) and whose release
has an image for the device's architecture. A device's reports say what it did with the
release: its latest update outcome, its twin (release and services' health), and whether
it fetched its new signed assignment.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from edgefleet import rollout, selector
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.errors import HubConfigError
from edgefleet.hub.fleetview import Owners, Snapshot, Target
from edgefleet.hub.records import AssignedBy, Assignment, Deployment, DeploymentMember
from edgefleet.hub.services.audit import record
from edgefleet.waves import parse_waves, percent

log = logging.getLogger(__name__)
Choice = TypeVar("Choice", bound=str)

OWNING = ("active", "paused", "completed")
"""States in which a deployment decides what its targets run (finished ones no longer do)."""
SCHEDULER = "hub:scheduler"
"""The actor of what the scheduler does, in the audit log."""


@dataclass(frozen=True, slots=True)
class AppView:
    """One app's deployments and everything the scheduler needs to judge their devices."""

    app: str
    deployments: list[Deployment]
    architectures: dict[str, tuple[str, ...]]
    """Deployment id -> architectures its release has images for."""
    selectors: dict[str, selector.Selector]
    owners: Owners
    """Which of these deployments each accepted device follows."""
    targets: Mapping[str, Target]


def policy_of(deployment: Deployment) -> rollout.Policy:
    return rollout.Policy(
        waves=parse_waves(deployment.waves),
        bake=timedelta(seconds=deployment.bake_seconds),
        wave_timeout=timedelta(seconds=deployment.wave_timeout_seconds),
        max_failure=percent(deployment.max_failure),
        on_failure="rollback" if deployment.on_failure == "rollback" else "pause",
        max_pending=deployment.max_pending,
    )


def progress_of(deployment: Deployment) -> rollout.Progress:
    return rollout.Progress(
        state=_one_of(rollout.STATES, deployment.state),
        wave=deployment.wave,
        wave_started_at=deployment.wave_started_at,
        bake_started_at=deployment.bake_started_at,
        accepted_failures=deployment.accepted_failures,
        reason=deployment.reason,
        last_held_at=deployment.last_held_at,
    )


def members_of(members: Sequence[DeploymentMember]) -> dict[str, rollout.Member]:
    return {
        m.device_id: rollout.Member(
            wave=m.wave, status=_one_of(rollout.MEMBER_STATUSES, m.status), assigned_at=m.assigned_at
        )
        for m in members
    }


def _one_of(allowed: tuple[Choice, ...], value: str) -> Choice:
    """A stored state as its literal type; the hub writes only these, so another one is a broken database."""
    for choice in allowed:
        if choice == value:
            return choice
    raise HubConfigError("bad_rollout_state", f"unknown rollout state {value!r} in the database")


def view(hub: Hub, tx: Tx, app: str, deployments: Sequence[Deployment], fleet: Snapshot | None) -> AppView:
    """What judging `app`'s deployments needs; `fleet` is what `hub.fleet.refresh` returned (None: no devices).

    Which deployment each device follows is the fleet view's, kept per set of competing
    deployments and recomputed only for devices that changed.
    """
    architectures = {}
    for deployment in deployments:
        release = tx.get_release(deployment.app, deployment.version)
        architectures[deployment.id] = () if release is None else release.architectures
    ordered = sorted(deployments, key=lambda d: (-d.priority, d.created_at, d.id))
    selectors = {d.id: selector.parse(d.target) for d in deployments}

    def choose(device: Target) -> str | None:
        chosen = _selecting(ordered, architectures, selectors, device)
        return chosen[0].id if chosen else None

    key = (app, tuple((d.id, d.state, d.priority, d.target, architectures[d.id], d.created_at) for d in ordered))
    return AppView(
        app=app,
        deployments=ordered,
        architectures=architectures,
        selectors=selectors,
        owners=Owners({}, {}) if fleet is None else hub.fleet.owners(key, choose, fleet),
        targets={} if fleet is None else fleet.targets,
    )


def _selecting(
    ordered: Sequence[Deployment],
    architectures: Mapping[str, tuple[str, ...]],
    selectors: Mapping[str, selector.Selector],
    device: Target,
) -> list[Deployment]:
    return [
        deployment
        for deployment in ordered
        if deployment.state in OWNING
        and device.arch in architectures[deployment.id]
        and selector.matches(selectors[deployment.id], device.tags)
    ]


def selecting(app_view: AppView, device: Target) -> list[Deployment]:
    """The deployments of the app that select the device and fit its architecture, highest priority first."""
    return _selecting(app_view.deployments, app_view.architectures, app_view.selectors, device)


def owner(app_view: AppView, device: Target) -> Deployment | None:
    """The deployment the device follows for the app: the highest priority that selects it and fits its arch."""
    chosen = selecting(app_view, device)
    return chosen[0] if chosen else None


def report_of(deployment: Deployment, device: Target, member: DeploymentMember | None) -> rollout.Report:
    """What the device's own reports say of the deployment's release."""
    outcome = device.outcomes.get(deployment.app)
    if outcome is not None and outcome[1] == deployment.version and outcome[0] in ("failed", "rolled-back"):
        return "failed"
    running = device.running.get(deployment.app)
    if running is not None and running.version == deployment.version:
        return "updated" if running.healthy else "unhealthy"
    if outcome is not None and outcome == ("committed", deployment.version):
        return "updated"
    if member is not None and member.fetched_at is not None:
        return "fetched"
    return "none"


def seen_by(
    hub: Hub,
    app_view: AppView,
    deployment: Deployment,
    members: Mapping[str, DeploymentMember],
    last_seen: Mapping[str, datetime | None],
) -> dict[str, rollout.Seen]:
    """The devices `deployment` targets now; for its members, what they reported and whether they are online.

    Members are judged (`rollout.observe`, `rollout.counts`, the wave timeout); the others
    are counted and ordered, each a dictionary entry, not a look at its reports. One the
    pass assigns is judged in the same `decide` as offline with nothing reported (see
    `_UNJUDGED`), and as it is from the next pass on. `last_seen` is needed for the members
    still under way (or that left); a member without an entry counts as online.
    """
    now, limit = hub.clock(), hub.settings.offline_after
    targeted = app_view.owners.by_deployment.get(deployment.id, frozenset())
    seen = dict.fromkeys(targeted, _UNJUDGED)
    for device_id, member in members.items():
        if device_id not in targeted:
            continue
        at = last_seen.get(device_id, now)
        seen[device_id] = rollout.Seen(
            online=at is not None and now - at <= limit,
            report=report_of(deployment, app_view.targets[device_id], member),
        )
    return seen


_UNJUDGED = rollout.Seen(online=False)
"""What `seen_by` says of a targeted device the rollout has not assigned. If the pass assigns it,
`decide` judges it at once: as offline (counted apart, never failed for a timeout) until the
next pass reads when it was last seen."""


# --- acting on a decision ------------------------------------------------------------------


def act(hub: Hub, tx: Tx, deployment: Deployment, decision: rollout.Decision, *, actor: str = SCHEDULER) -> Deployment:
    """Carry out a decision inside the caller's transaction; the deployment as it is afterwards.

    Assignments are written in bulk (a wave may assign thousands of devices), then restores.
    """
    now = hub.clock()
    joining: dict[str, int] = {}
    new_members: list[DeploymentMember] = []
    restores: list[str] = []
    current = tx.assignments_of_app(deployment.app, _joining(decision))
    for action in decision.actions:
        match action:
            case rollout.SetStatus(device_id, status):
                tx.set_member_status(deployment.id, device_id, status)
            case rollout.Assign(device_id, wave):
                previous = current.get(device_id)
                new_members.append(
                    DeploymentMember(
                        deployment_id=deployment.id,
                        device_id=device_id,
                        wave=wave,
                        status="assigned",
                        previous_version=None if previous is None else previous.version,
                        assigned_at=now,
                        fetched_at=None,
                    )
                )
                joining[device_id] = wave
            case rollout.Rejoin(device_id, wave):
                # Assigned anew: a fetch noted before now (`Hub.flush_fetches`) was of the targets before.
                tx.update_member(
                    deployment.id, device_id, wave=wave, status="assigned", assigned_at=now, fetched_at=None
                )
                joining[device_id] = wave
            case rollout.Restore(device_id):
                restores.append(device_id)
    tx.insert_members(new_members)
    fresh = [
        _assignment(deployment, device_id, current.get(device_id), now)
        for device_id in sorted(joining)
        if current.get(device_id) is None or current[device_id].version != deployment.version
    ]
    tx.put_assignments(fresh)
    if restores:
        members = {m.device_id: m for m in tx.list_members(deployment.id)}  # including this decision's
        for device_id in restores:
            if device_id in members:
                _restore(tx, deployment, members[device_id], now)
    progress = decision.progress
    if progress != progress_of(deployment):
        deployment = tx.update_deployment(
            deployment.id,
            state=progress.state,
            wave=progress.wave,
            wave_started_at=progress.wave_started_at,
            bake_started_at=progress.bake_started_at,
            accepted_failures=progress.accepted_failures,
            reason=progress.reason,
            last_held_at=progress.last_held_at,
            updated_at=now,
        )
    for event in decision.events:
        detail: dict[str, Any] = {"event": event, "wave": progress.wave + 1, "state": progress.state}
        if restores:
            detail["restored"] = len(restores)
        record(
            hub, tx, actor=actor, action="deployment.progress", target=f"deployment:{deployment.name}", detail=detail
        )
    if joining:
        log.info("deployment %s: assigned %d devices (wave %d)", deployment.name, len(joining), progress.wave + 1)
    return deployment


def _joining(decision: rollout.Decision) -> list[str]:
    """The devices the decision assigns (a paced wave assigns some each pass: only theirs are read)."""
    return [a.device_id for a in decision.actions if isinstance(a, rollout.Assign | rollout.Rejoin)]


def _assignment(deployment: Deployment, device_id: str, previous: Assignment | None, now: datetime) -> Assignment:
    """The deployment's release for the device, signed as a rollback when older than what it had."""
    return Assignment(
        device_id=device_id,
        app=deployment.app,
        version=deployment.version,
        release_counter=deployment.release_counter,
        rollback=previous is not None and deployment.release_counter < previous.release_counter,
        assigned_by=AssignedBy.rollout(deployment.name),
        assigned_at=now,
        retry=0 if previous is None else previous.retry,
    )


def _restore(tx: Tx, deployment: Deployment, member: DeploymentMember, now: datetime) -> None:
    """Give the device back its release from before the rollout, unless someone has assigned it since."""
    tx.set_member_status(deployment.id, member.device_id, "restored")
    current = next((a for a in tx.list_assignments(member.device_id) if a.app == deployment.app), None)
    if current is None or current.version != deployment.version:
        return
    if member.previous_version is None:
        tx.delete_assignment(member.device_id, deployment.app)
        return
    release = tx.get_release(deployment.app, member.previous_version)
    if release is None:  # pragma: no cover - releases are never deleted
        return
    tx.put_assignment(
        replace(
            current,
            version=release.version,
            release_counter=release.release_counter,
            rollback=release.release_counter < deployment.release_counter,
            assigned_by=AssignedBy.rollout(deployment.name, rollback=True),
            assigned_at=now,
        )
    )


# --- the pass ---------------------------------------------------------------------------------


def active(hub: Hub) -> bool:
    """Whether any deployment is rolling out now (the scheduler's cheap check before a pass)."""
    with hub.store.transaction(readonly=True) as tx:
        return bool(tx.list_deployments(states=("active",), limit=1))


def tick(hub: Hub, *, wait: bool = False) -> int:
    """One scheduler pass over every deployment that is not finished; how many actions it took.

    Skips (0) when another process holds the rollout lock, unless `wait` (then it runs after that pass).
    """
    with hub.store.transaction(readonly=True) as tx:
        if not tx.list_deployments(states=OWNING, limit=1):
            return 0
    taken = 0
    acted: list[str] = []
    fleet = hub.fleet.refresh(hub.store)  # changes committed from now on are the next pass's
    with hub.store.transaction() as tx:
        if not tx.lock_rollouts(wait=wait):
            return 0
        deployments = tx.list_deployments(states=OWNING, limit=100_000)
        for app in sorted({d.app for d in deployments}):
            mine = [d for d in deployments if d.app == app]
            app_view = view(hub, tx, app, mine, fleet)
            for deployment in mine:
                members = {m.device_id: m for m in tx.list_members(deployment.id)}
                seen = seen_by(hub, app_view, deployment, members, tx.members_last_seen(deployment.id))
                decision = rollout.decide(
                    deployment.name,
                    policy_of(deployment),
                    progress_of(deployment),
                    members_of(list(members.values())),
                    seen,
                    hub.clock(),
                )
                act(hub, tx, deployment, decision)
                taken += len(decision.actions)
                if decision.actions:
                    acted.append(deployment.id)
    hub.statuses.invalidate(acted)  # committed: this process's viewers see the pass at once
    return taken
