"""Deployments as operators see them: create, preview, apply from a file, pause, resume, abort, status, and why.

A deployment names a release (APP@VERSION), a target selector, a priority and a rollout
policy. Where several deployments of one app select a device, the highest priority wins;
two deployments of one app with equal priority whose targets could select the same device
are refused (whatever devices exist now), so the winner is never a matter of chance. Every
change is audited and runs under the rollout lock; creating or resuming a deployment runs
a scheduler pass at once, so its first wave is assigned before the call returns.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any, Literal

from edgefleet import rollout, selector
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.errors import BadRequestError, ConflictError, NotFoundError
from edgefleet.hub.fleetview import Target, running_of, tags_of
from edgefleet.hub.records import AssignedBy, Deployment
from edgefleet.hub.services import metadata as repo_metadata
from edgefleet.hub.services import rollouts
from edgefleet.hub.services.audit import record
from edgefleet.hub.services.operators import Operator, authorize, operator_action
from edgefleet.waves import WaveError, canary_order, parse_waves, percent, percent_text, reach

MAX_APPLY = 100
"""Deployments one apply may declare."""
MAX_WAVE_SECONDS = 30 * 86400
Outcome = Literal["created", "updated", "restarted", "unchanged"]


@dataclass(frozen=True, slots=True)
class Spec:
    """A deployment as declared, validated and in canonical form (selector and waves re-rendered)."""

    name: str
    app: str
    version: str
    target: str
    priority: int
    waves: str
    bake_seconds: int
    wave_timeout_seconds: int
    max_failure: str
    on_failure: str
    max_pending: int | None = None


def make_spec(
    *,
    name: str | None,
    app: str,
    version: str,
    target: str,
    priority: int,
    waves: str,
    bake_seconds: int,
    wave_timeout_seconds: int,
    max_failure: str,
    on_failure: str,
    max_pending: int | None = None,
) -> Spec:
    """Validate a declaration (its shapes are checked by the API schema; this checks the languages in it).

    Raises:
        BadRequestError: the target or waves do not parse (the message says where), or a bound is passed.
    """
    try:
        parsed = selector.parse(target)
    except selector.SelectorError as exc:
        raise BadRequestError("invalid_target", f"target: {exc.message} at position {exc.position}") from exc
    try:
        wave_spec = ",".join(w.text() for w in parse_waves(waves))
        threshold = percent(max_failure)
    except WaveError as exc:
        raise BadRequestError("invalid_rollout", str(exc)) from exc
    if not 0 <= bake_seconds <= MAX_WAVE_SECONDS or not 60 <= wave_timeout_seconds <= MAX_WAVE_SECONDS:
        raise BadRequestError("invalid_rollout", "bake is 0 to 30 days and the wave timeout 1 minute to 30 days")
    return Spec(
        name=name or f"{app}-{version}"[:63],
        app=app,
        version=version,
        target=selector.render(parsed),
        priority=priority,
        waves=wave_spec,
        bake_seconds=bake_seconds,
        wave_timeout_seconds=wave_timeout_seconds,
        max_failure=percent_text(threshold),
        on_failure=on_failure,
        max_pending=max_pending,
    )


def _spec_of(deployment: Deployment) -> Spec:
    return Spec(**{f.name: getattr(deployment, f.name) for f in fields(Spec)})


def _release_counter(tx: Tx, spec: Spec) -> int:
    release = tx.get_release(spec.app, spec.version)
    if release is None:
        raise NotFoundError("release_not_found", f"no release {spec.app}@{spec.version}")
    if not repo_metadata.is_target(tx, release.manifest_path):
        raise ConflictError("release_withdrawn", f"{spec.app}@{spec.version} is no longer a target of the repository")
    return release.release_counter


def _check_priority(tx: Tx, spec: Spec, *, exclude: str | None) -> None:
    """Refuse equal priorities of one app on targets that could select the same device."""
    mine = selector.parse(spec.target)
    for other in tx.list_deployments(app=spec.app, states=rollouts.OWNING):
        if other.id == exclude or other.priority != spec.priority:
            continue
        if selector.overlaps(mine, selector.parse(other.target)):
            raise ConflictError(
                "priority_conflict",
                f"deployment {other.name!r} of {spec.app} has priority {spec.priority} too and its target "
                f"({other.target}) can select the same devices; give one of them another priority",
            )


def _new(hub: Hub, tx: Tx, spec: Spec, actor: str) -> Deployment:
    now = hub.clock()
    progress = rollout.start(now)
    deployment = Deployment(
        id=secrets.token_hex(8),
        **{f.name: getattr(spec, f.name) for f in fields(Spec)},
        release_counter=_release_counter(tx, spec),
        state=progress.state,
        wave=progress.wave,
        wave_started_at=progress.wave_started_at,
        bake_started_at=None,
        accepted_failures=0,
        reason=None,
        last_held_at=None,
        revision=1,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    _check_priority(tx, spec, exclude=None)
    tx.insert_deployment(deployment)
    return deployment


def _audit_detail(spec: Spec) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in fields(Spec) if f.name != "name"}


def create(hub: Hub, operator: Operator, spec: Spec) -> Deployment:
    """Create a deployment and run a scheduler pass, so its first wave is assigned at once (operator).

    Raises:
        NotFoundError: no such release.
        ConflictError: the name is taken, the release withdrawn, or the priority conflicts.
    """
    target = f"deployment:{spec.name}"
    with operator_action(hub, operator, "operator", action="deployment.create", target=target) as tx:
        tx.lock_rollouts()
        if tx.find_deployment(spec.name) is not None:
            raise ConflictError("deployment_exists", f"a deployment named {spec.name!r} exists")
        deployment = _new(hub, tx, spec, operator.actor)
        record(hub, tx, actor=operator.actor, action="deployment.create", target=target, detail=_audit_detail(spec))
    rollouts.tick(hub, wait=True)
    return show(hub, operator, deployment.id)


def apply(hub: Hub, operator: Operator, specs: Sequence[Spec]) -> list[tuple[str, Outcome]]:
    """Create or update the named deployments, all or none; the same declarations again change nothing (operator).

    A changed release restarts the deployment's rollout from its first wave; other changes
    (target, priority, waves, bake, threshold, pace) take effect in place. A deployment's app
    cannot change. Deployments the file does not name are left alone.

    Raises:
        BadRequestError: too many, or a name declared twice.
        NotFoundError / ConflictError: as `create`, for any one of them (then nothing changes).
    """
    if len(specs) > MAX_APPLY:
        raise BadRequestError("too_many_deployments", f"one apply declares at most {MAX_APPLY} deployments")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BadRequestError("duplicate_name", "a deployment name is declared twice")
    results: list[tuple[str, Outcome]] = []
    with operator_action(hub, operator, "operator", action="deployment.apply", target="deployments") as tx:
        tx.lock_rollouts()
        now = hub.clock()
        for spec in specs:
            existing = tx.find_deployment(spec.name)
            target = f"deployment:{spec.name}"
            if existing is None:
                _new(hub, tx, spec, operator.actor)
                results.append((spec.name, "created"))
                detail = _audit_detail(spec)
                record(hub, tx, actor=operator.actor, action="deployment.create", target=target, detail=detail)
                continue
            before = _spec_of(existing)
            if before == spec:
                results.append((spec.name, "unchanged"))
                continue
            if existing.app != spec.app:
                raise ConflictError("app_changed", f"deployment {spec.name!r} is for {existing.app}; use a new name")
            _check_priority(tx, spec, exclude=existing.id)
            changes: dict[str, Any] = {f.name: getattr(spec, f.name) for f in fields(Spec) if f.name != "name"}
            changes["wave"] = min(existing.wave, len(parse_waves(spec.waves)) - 1)  # fewer waves than reached
            outcome: Outcome = "updated"
            if spec.version != existing.version:
                changes["release_counter"] = _release_counter(tx, spec)
                progress = rollout.start(now)
                changes.update(
                    state=progress.state,
                    wave=0,
                    wave_started_at=progress.wave_started_at,
                    bake_started_at=None,
                    accepted_failures=0,
                    reason=None,
                    last_held_at=None,
                    revision=existing.revision + 1,
                )
                tx.delete_members(existing.id)
                outcome = "restarted"
            tx.update_deployment(existing.id, updated_at=now, **changes)
            changed = {k: [getattr(before, k), v] for k, v in changes.items() if k in _audit_detail(spec)}
            record(
                hub,
                tx,
                actor=operator.actor,
                action="deployment.update",
                target=target,
                detail={"changed": {k: v for k, v in changed.items() if v[0] != v[1]}, "outcome": outcome},
            )
            results.append((spec.name, outcome))
    if any(outcome != "unchanged" for _, outcome in results):
        rollouts.tick(hub, wait=True)
    return results


def _find(tx: Tx, key: str, *, for_update: bool = False) -> Deployment:
    deployment = tx.get_deployment(key, for_update=for_update)
    if deployment is None:
        named = tx.find_deployment(key)
        deployment = None if named is None else tx.get_deployment(named.id, for_update=for_update)
    if deployment is None:
        raise NotFoundError("deployment_not_found", f"no deployment {key!r}")
    return deployment


def pause(hub: Hub, operator: Operator, key: str) -> Deployment:
    """Hold an active deployment: nothing more is assigned until it is resumed (operator)."""
    return _transition(hub, operator, key, "pause")


def resume(hub: Hub, operator: Operator, key: str) -> Deployment:
    """Continue a paused deployment; the current wave's failures so far are accepted (operator)."""
    return _transition(hub, operator, key, "resume")


def abort(hub: Hub, operator: Operator, key: str, *, roll_back: bool) -> Deployment:
    """Stop a deployment for good; with `roll_back`, its devices get their previous release again (operator)."""
    return _transition(hub, operator, key, "abort-rollback" if roll_back else "abort")


def _transition(hub: Hub, operator: Operator, key: str, verb: str) -> Deployment:
    action = f"deployment.{verb.split('-')[0]}"
    with operator_action(hub, operator, "operator", action=action, target=f"deployment:{key}") as tx:
        tx.lock_rollouts()
        deployment = _find(tx, key, for_update=True)
        progress = rollouts.progress_of(deployment)
        members = rollouts.members_of(tx.list_members(deployment.id))
        reason = f"{verb.replace('-', ' with ')} by {operator.user}"
        if verb == "pause":
            if deployment.state != "active":
                raise ConflictError("not_active", f"the deployment is {deployment.state}; only an active one pauses")
            decision = rollout.Decision(replace(progress, state="paused", reason=reason))
        elif verb == "resume":
            if deployment.state != "paused":
                raise ConflictError("not_paused", f"the deployment is {deployment.state}; only a paused one resumes")
            paused_for = max(hub.clock() - deployment.updated_at, timedelta(0))  # updated_at: when it paused
            decision = rollout.Decision(rollout.resume(progress, members, paused_for=paused_for))
        else:
            if deployment.state in rollout.FINISHED:
                raise ConflictError("finished", f"the deployment is already {deployment.state}")
            if verb == "abort":
                decision = rollout.Decision(replace(progress, state="aborted", reason=reason))
            else:
                decision = rollout.roll_back(progress, members, reason)
        deployment = rollouts.act(hub, tx, deployment, decision, actor=operator.actor)
        record(
            hub,
            tx,
            actor=operator.actor,
            action=action,
            target=f"deployment:{deployment.name}",
            detail={"state": deployment.state, "wave": deployment.wave + 1, "rollback": verb == "abort-rollback"},
        )
    hub.statuses.invalidate([deployment.id])  # committed
    if verb == "resume":
        rollouts.tick(hub, wait=True)
    return deployment


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """A deployment with its devices counted per wave, and how many it targets now."""

    deployment: Deployment
    waves: list[tuple[int, rollout.WaveCounts]]
    """(cumulative devices the wave reaches, its counts) per wave."""
    targeted: int
    left: int


def show(hub: Hub, operator: Operator, key: str) -> Deployment:
    authorize(operator, "viewer", action="deployment.show")
    with hub.store.transaction(readonly=True) as tx:
        return _find(tx, key)


def list_deployments(hub: Hub, operator: Operator, *, app: str | None, limit: int) -> list[Deployment]:
    authorize(operator, "viewer", action="deployment.list")
    with hub.store.transaction(readonly=True) as tx:
        return tx.list_deployments(app=app, limit=limit)


@dataclass(frozen=True, slots=True)
class SharedStatus:
    """A deployment's status as computed for one viewer, kept for the next (`Hub.statuses`)."""

    generation: int
    """The fleet view's generation it was computed from."""
    computed_at: float
    """`time.monotonic()` when it was computed."""
    status: Status


def _shared(hub: Hub, deployment_id: str) -> SharedStatus | None:
    held: SharedStatus | None = hub.statuses.get(deployment_id)
    return held


def status(hub: Hub, operator: Operator, key: str, *, max_age: float = 0.0) -> Status:
    """Per wave: pending, downloading, updated, failed and offline devices (viewer).

    Computed from the fleet view and the deployment's members (its cost grows with the
    deployment, not the fleet), and shared by everyone who asks in this process while the
    deployment and the fleet view stay as they were, for at most `STATUS_SECONDS`; a
    scheduler pass or an operator's change here that acts on the deployment drops it at once
    (after its commit), one in another process within that time.

    A live view (the dashboard's, `deploy status --watch`) asks with `max_age`: a status
    computed for anyone at most that long ago (and `STATUS_SECONDS` at most) will do, even
    if devices changed since, so during a rollout, when the fleet view changes all the
    time, its viewers still share one computation per deployment.
    """
    authorize(operator, "viewer", action="deployment.status")
    with hub.store.transaction(readonly=True) as tx:
        deployment = _find(tx, key)
    held = _shared(hub, deployment.id)
    if held is not None and held.status.deployment == deployment and time.monotonic() - held.computed_at <= max_age:
        return held.status
    ticket = hub.statuses.ticket()
    fleet = hub.fleet.refresh(hub.store)
    held = _shared(hub, deployment.id)  # again: a pass may have dropped it meanwhile
    if held is not None and held.generation == fleet.generation and held.status.deployment == deployment:
        return held.status
    computed_at = time.monotonic()
    with hub.store.transaction(readonly=True) as tx:
        deployment = _find(tx, key)
        stored = {m.device_id: m for m in tx.list_members(deployment.id)}
        others = tx.list_deployments(app=deployment.app, states=rollouts.OWNING)
        competing = [*(d for d in others if d.id != deployment.id), deployment]
        app_view = rollouts.view(hub, tx, deployment.app, competing, fleet)
        last_seen = tx.members_last_seen(deployment.id)
    seen = rollouts.seen_by(hub, app_view, deployment, stored, last_seen)
    members = rollouts.members_of(list(stored.values()))
    left = sum(1 for m in members.values() if m.status == "left")
    # A finished rollout targets nothing any more: it is shown as far as it got, its members.
    targeted = len(seen) if deployment.state in rollouts.OWNING else len(members) - left
    waves = parse_waves(deployment.waves)
    reached = reach(waves, targeted)
    per_wave = [(reached[i], rollout.counts(i, members, seen)) for i in range(len(waves))]
    found = Status(deployment=deployment, waves=per_wave, targeted=targeted, left=left)
    hub.statuses.put(deployment.id, SharedStatus(fleet.generation, computed_at, found), ticket)
    return found


@dataclass(frozen=True, slots=True)
class Preview:
    """What a deployment would reach if created now."""

    targeted: list[tuple[str, int]]
    """(device id, wave index) in canary order, as far as the listing bound allows."""
    total: int
    reach: list[int]
    kept: dict[str, int]
    """Name of a higher-priority deployment -> devices it keeps."""
    incompatible: int
    """Devices the target selects whose architecture the release has no image for."""


def _architectures(tx: Tx, deployment: Deployment) -> tuple[str, ...]:
    release = tx.get_release(deployment.app, deployment.version)
    return () if release is None else release.architectures


def preview(hub: Hub, operator: Operator, spec: Spec, *, limit: int) -> Preview:
    """The devices a deployment would reach, without creating it (viewer)."""
    authorize(operator, "viewer", action="deployment.preview")
    targets = hub.fleet.refresh(hub.store).targets
    with hub.store.transaction(readonly=True) as tx:
        release = tx.get_release(spec.app, spec.version)
        if release is None:
            raise NotFoundError("release_not_found", f"no release {spec.app}@{spec.version}")
        others = [d for d in tx.list_deployments(app=spec.app, states=rollouts.OWNING) if d.name != spec.name]
        higher = sorted((d for d in others if d.priority > spec.priority), key=lambda d: -d.priority)
        fits = {d.id: _architectures(tx, d) for d in higher}
    mine = selector.parse(spec.target)
    parsed = {d.id: selector.parse(d.target) for d in higher}
    chosen: list[str] = []
    kept: dict[str, int] = {}
    incompatible = 0
    for device in targets.values():
        if not selector.matches(mine, device.tags):
            continue
        if device.arch not in release.architectures:
            incompatible += 1
            continue
        winner = next(
            (d for d in higher if device.arch in fits[d.id] and selector.matches(parsed[d.id], device.tags)), None
        )
        if winner is not None:
            kept[winner.name] = kept.get(winner.name, 0) + 1
            continue
        chosen.append(device.id)
    waves = parse_waves(spec.waves)
    reached = reach(waves, len(chosen))
    order = canary_order(spec.name, chosen)
    listed = [
        (device_id, next(i for i, r in enumerate(reached) if position < r))
        for position, device_id in enumerate(order[:limit])
    ]
    return Preview(targeted=listed, total=len(chosen), reach=reached, kept=kept, incompatible=incompatible)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why one app on a device runs (or will run) what it does."""

    app: str
    assigned: str | None
    assigned_by: AssignedBy | None
    deployment: Deployment | None
    """The deployment the device follows for the app now, if any."""
    member: str | None
    """Its status in that deployment's rollout, or None when its wave has not reached it yet."""
    wave: int | None
    losers: list[Deployment]
    """Deployments of the app that select the device too but lose on priority."""


def why(hub: Hub, operator: Operator, device_id: str) -> list[Reason]:
    """For each app of the device: its assignment, who made it, and which deployments select it (viewer)."""
    authorize(operator, "viewer", action="device.why")
    with hub.store.transaction(readonly=True) as tx:
        device = tx.get_device(device_id)
        if device is None:
            raise NotFoundError("device_not_found", f"no device {device_id}")
        assignments = {a.app: a for a in tx.list_assignments(device_id)}
        memberships = {m.deployment_id: m for m in tx.members_of_device(device_id)}
        deployments = tx.list_deployments(states=rollouts.OWNING, limit=100_000)
        views = {
            app: rollouts.view(hub, tx, app, [d for d in deployments if d.app == app], None)
            for app in {d.app for d in deployments}
        }
    target = Target(
        id=device.id,
        tags=tags_of(device.fleet, device.tags),
        arch=device.arch,
        running=running_of(device.reported),
        outcomes={},
    )
    reasons = []
    for app in sorted(set(assignments) | set(views)):
        assignment = assignments.get(app)
        app_view = views.get(app)
        targeted = app_view is not None and device.status == "accepted"  # rollouts target only accepted devices
        chosen = rollouts.owner(app_view, target) if targeted and app_view else None
        losers = rollouts.selecting(app_view, target) if targeted and app_view else []
        member = None if chosen is None else memberships.get(chosen.id)
        reasons.append(
            Reason(
                app=app,
                assigned=None if assignment is None else assignment.version,
                assigned_by=None if assignment is None else assignment.assigned_by,
                deployment=chosen,
                member=None if member is None else member.status,
                wave=None if member is None else member.wave,
                losers=[d for d in losers if chosen is None or d.id != chosen.id],
            )
        )
    return reasons


def explain(reason: Reason) -> str:
    """One or two sentences an operator can read: why the app runs what it runs on the device."""
    chosen, assigned, by = reason.deployment, reason.assigned, reason.assigned_by or AssignedBy()
    if chosen is None:
        if assigned is None:
            text = f"No deployment selects this device for {reason.app}, and nothing is assigned."
        elif by.deployment is not None:
            text = (
                f"{reason.app}@{assigned} was assigned by {by}, which no longer selects this device "
                "(retagged, finished, or the release has no image for its architecture)."
            )
        else:
            text = f"{reason.app}@{assigned} was assigned by hand ({by}); no deployment selects this device."
    else:
        head = f"Deployment {chosen.name} (priority {chosen.priority}, target: {chosen.target}) selects this device"
        if reason.member is None:
            text = f"{head}; its rollout ({chosen.state}, wave {chosen.wave + 1}) has not reached it yet."
        else:
            text = f"{head} and assigned it {reason.app}@{chosen.version} in wave {(reason.wave or 0) + 1}"
            text += f" ({reason.member})."
            if by.deployment != chosen.name:
                if assigned != chosen.version:
                    text += f" Since then {by} assigned {reason.app}@{assigned}."
                else:  # e.g. another deployment's rollback put back this one's release
                    text += f" The assignment was last written by {by}, with the same release."
    if reason.losers:
        names = ", ".join(f"{d.name} (priority {d.priority})" for d in reason.losers)
        text += f" Also selected by {names}, which lose on priority."
    return text
