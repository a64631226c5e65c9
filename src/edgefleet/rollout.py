"""The rollout controller's decisions (pure): a deployment's progress, its devices' reports and the time -> what to do.

The scheduler (hub.services.rollouts) observes, calls `decide`, and carries out the
`Decision`. Per wave: the wave's devices (the first `reach` of the canary order) are
assigned the release; the wave waits until each has reported success or failure, or the
wave's timeout passes (devices still out then are counted apart as offline, or failed when
they are online but never finished); then the bake time runs, during which a device of the
wave that turns unhealthy counts as failed; then the next wave starts. Whenever the wave's
failures (beyond those an operator accepted by resuming) pass the threshold, the rollout
pauses, or rolls back: every device it assigned gets its previous release again.

Devices that match later (enrolled or retagged) join at their place in the canary order:
at once if the rollout has already reached that place, else with their wave. A completed
deployment keeps assigning newcomers; a paused one assigns nothing; aborted and rolled-back
ones are finished. A device is assigned at most once per rollout (the scheduler keeps one
member row per device), so nothing here ever assigns twice.

A paced rollout (`Policy.max_pending`) has at most that many devices at a time that it told
of the release and that have not begun (`holding`): a wave's devices are assigned in canary
order as earlier ones begin their download, so a wave of thousands does not reach the hub,
the registry and the network all at once, and each device it tells starts within seconds.
Devices coming back to the rollout (rejoins) wait for room the same way. While a wave has
devices held back it is not finished and its timeout does not run: the timeout counts from
the last pass that held some back (`Progress.last_held_at`), whatever the pace is now. Its
failure threshold stays a share of the whole wave, held-back devices included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Literal

from edgefleet.waves import Wave, canary_order, over_threshold, percent_text, reach

State = Literal["active", "paused", "completed", "aborted", "rolled-back"]
STATES: tuple[State, ...] = ("active", "paused", "completed", "aborted", "rolled-back")
FINISHED: frozenset[State] = frozenset({"aborted", "rolled-back"})
"""States in which a deployment does nothing more."""
OnFailure = Literal["pause", "rollback"]

MemberStatus = Literal["assigned", "downloading", "updated", "failed", "restored", "left"]
MEMBER_STATUSES: tuple[MemberStatus, ...] = ("assigned", "downloading", "updated", "failed", "restored", "left")
"""What the controller knows of one device it assigned: `left` once it no longer targets it."""
TERMINAL: frozenset[MemberStatus] = frozenset({"updated", "failed"})
MAX_PENDING = 1_000_000
"""The largest pace a deployment may ask for."""
PENDING_HOLD = timedelta(minutes=2)
"""How long a device told of the release, online and not yet downloading, holds a place of a
paced rollout: one that has not begun by then (its agent is stuck, or it was told while its
link dropped) no longer holds the others back."""

Report = Literal["none", "fetched", "updated", "failed", "unhealthy"]
"""What a device's own reports say of this release: nothing yet; its signed assignment was
fetched (it is downloading); it runs the release; it failed or rolled back; it runs the
release but a service is unhealthy or restarting."""


@dataclass(frozen=True, slots=True)
class Policy:
    """How a deployment rolls out: the waves, the bake and wave timeout, the failure threshold and reaction."""

    waves: tuple[Wave, ...]
    bake: timedelta
    wave_timeout: timedelta
    max_failure: Fraction
    on_failure: OnFailure
    max_pending: int | None = None
    """Pacing: at most this many devices told, online and not yet downloading (None: a wave at once)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a rollout is: its state, its current wave and when that wave started waiting and baking."""

    state: State
    wave: int = 0
    wave_started_at: datetime | None = None
    bake_started_at: datetime | None = None
    accepted_failures: int = 0
    """Failures of the current wave an operator accepted by resuming; the threshold counts only those beyond."""
    reason: str | None = None
    last_held_at: datetime | None = None
    """The last pass that held devices of the current wave back for the pace (None: none did)."""


@dataclass(frozen=True, slots=True)
class Member:
    """A device the rollout assigned: in which wave, and what it knows of the device."""

    wave: int
    status: MemberStatus
    assigned_at: datetime | None = None
    """When the rollout (last) assigned it; None where unknown (it then counts as just assigned)."""


@dataclass(frozen=True, slots=True)
class Seen:
    """One device the deployment targets now (it matches, and no higher-priority deployment does)."""

    online: bool
    report: Report = "none"


@dataclass(frozen=True, slots=True)
class Assign:
    device_id: str
    wave: int


@dataclass(frozen=True, slots=True)
class SetStatus:
    device_id: str
    status: MemberStatus


@dataclass(frozen=True, slots=True)
class Rejoin:
    """A device that had left the rollout is targeted again: assign it the release again, in `wave`."""

    device_id: str
    wave: int


@dataclass(frozen=True, slots=True)
class Restore:
    """Give the device back the release it had before this rollout assigned it."""

    device_id: str


Action = Assign | SetStatus | Rejoin | Restore


@dataclass(frozen=True, slots=True)
class Decision:
    progress: Progress
    actions: tuple[Action, ...] = ()
    events: tuple[str, ...] = field(default=())
    """Transitions worth an audit entry, as short text (e.g. ``wave 2 started``)."""

    def after(self, actions: Sequence[Action], events: Sequence[str]) -> Decision:
        """The same decision with earlier actions and events put before its own."""
        return Decision(self.progress, (*actions, *self.actions), (*events, *self.events))


@dataclass(frozen=True, slots=True)
class WaveCounts:
    """One wave's devices by what is known of them (for status; `offline` counts apart from the others)."""

    size: int = 0
    pending: int = 0
    downloading: int = 0
    updated: int = 0
    failed: int = 0
    offline: int = 0
    restored: int = 0


def start(now: datetime) -> Progress:
    """The progress of a rollout that starts now."""
    return Progress(state="active", wave=0, wave_started_at=now)


def observe(member: Member, seen: Seen | None, *, judging: bool) -> MemberStatus:
    """A member's status after the device's latest reports.

    `judging`: the member's wave is the one the rollout is waiting on or baking, so a device
    that turns unhealthy now counts as failed. Failed and restored are final; a device that
    no longer targets the deployment has left it.
    """
    if member.status in ("failed", "restored", "left"):
        return member.status  # a device that left and is back rejoins through `decide`
    if seen is None:
        return "left"
    match seen.report:
        case "failed":
            return "failed"
        case "unhealthy":
            return "failed" if judging else "updated"
        case "updated":
            return "updated"
        case "fetched":
            return "downloading" if member.status != "updated" else "updated"
        case "none":
            return member.status


def counts(wave: int, members: Mapping[str, Member], seen: Mapping[str, Seen]) -> WaveCounts:
    """The wave's members by status; those not finished whose device is offline count as offline."""
    size = pending = downloading = updated = failed = offline = restored = 0
    for device_id, member in members.items():
        if member.wave != wave or member.status == "left":
            continue
        size += 1
        device = seen.get(device_id)
        if member.status == "updated":
            updated += 1
        elif member.status == "failed":
            failed += 1
        elif member.status == "restored":
            restored += 1
        elif device is not None and not device.online:
            offline += 1
        elif member.status == "downloading":
            downloading += 1
        else:
            pending += 1
    return WaveCounts(size, pending, downloading, updated, failed, offline, restored)


def decide(
    key: str,
    policy: Policy,
    progress: Progress,
    members: Mapping[str, Member],
    seen: Mapping[str, Seen],
    now: datetime,
) -> Decision:
    """What to do now (pure).

    `key` is the deployment's name (it seeds the canary order), `members` the devices this
    rollout assigned, `seen` the devices it targets now.
    """
    actions: list[Action] = []
    events: list[str] = []
    current = dict(members)
    judged_wave = progress.wave if progress.state in ("active", "paused") else -1
    for device_id, member in sorted(members.items()):
        status = observe(member, seen.get(device_id), judging=member.wave == judged_wave)
        if status != member.status:
            actions.append(SetStatus(device_id, status))
            current[device_id] = replace(member, status=status)
    if progress.state in FINISHED or progress.state == "paused":
        return Decision(progress, tuple(actions))

    last = len(policy.waves) - 1
    wave = last if progress.state == "completed" else min(progress.wave, last)  # waves may have been cut since
    back = [d for d, m in sorted(current.items()) if m.status == "left" and d in seen]
    due = _due(key, policy.waves, wave, seen, current)
    wanting = len(back) + len(due)
    room = wanting if policy.max_pending is None else max(0, policy.max_pending - holding(current, seen, now))
    held = max(0, wanting - room)  # the pace's: rejoins first, then the wave's in canary order
    for device_id in back[:room]:
        actions.append(Rejoin(device_id, wave))
        current[device_id] = Member(wave=wave, status="assigned", assigned_at=now)
    for device_id in due[: max(0, room - len(back))]:
        actions.append(Assign(device_id, wave))
        current[device_id] = Member(wave=wave, status="assigned", assigned_at=now)
    if progress.state == "completed":
        return Decision(progress, tuple(actions))

    if held:
        progress = replace(progress, last_held_at=now)
    stop = _over(policy, progress, wave, current, seen, held=held)
    if stop is not None:
        return stop.after(actions, events)
    if held:
        return Decision(progress, tuple(actions))  # a paced wave goes on as its devices begin

    tally = counts(wave, current, seen)
    if progress.bake_started_at is None:
        unfinished = tally.size - tally.updated - tally.failed - tally.restored
        clock = max(filter(None, (progress.wave_started_at, progress.last_held_at)), default=now)
        timed_out = now - clock >= policy.wave_timeout
        if unfinished and not timed_out:
            return Decision(progress, tuple(actions))
        if unfinished:
            # Online devices that never finished count as failed; offline ones are counted apart.
            for device_id, member in sorted(current.items()):
                device = seen.get(device_id)
                stuck = member.wave == wave and member.status in ("assigned", "downloading")
                if stuck and device is not None and device.online:
                    actions.append(SetStatus(device_id, "failed"))
                    current[device_id] = replace(member, status="failed")
            events.append(f"wave {wave + 1} timed out with {unfinished} devices unfinished")
            stop = _over(policy, progress, wave, current, seen, held=0)
            if stop is not None:
                return stop.after(actions, events)
        progress = replace(progress, bake_started_at=now)
        if policy.bake > timedelta(0) and tally.size:
            events.append(f"wave {wave + 1} baking")
    baking_since = progress.bake_started_at if tally.size else None  # a wave with no devices does not bake
    if baking_since is not None and now - baking_since < policy.bake:
        return Decision(progress, tuple(actions), tuple(events))
    if wave == last:
        events.append("completed")
        return Decision(replace(progress, state="completed", reason=None), tuple(actions), tuple(events))
    following = replace(
        progress,
        wave=wave + 1,
        wave_started_at=now,
        bake_started_at=None,
        accepted_failures=0,
        reason=None,
        last_held_at=None,
    )
    events.append(f"wave {wave + 2} started")
    return decide(key, policy, following, current, seen, now).after(actions, events)


def _over(
    policy: Policy,
    progress: Progress,
    wave: int,
    members: Mapping[str, Member],
    seen: Mapping[str, Seen],
    *,
    held: int,
) -> Decision | None:
    """Pause or roll back when the wave's failures (beyond those accepted) pass the threshold; else None.

    `held`: the wave's devices a paced rollout has not assigned yet, part of the wave's size.
    """
    tally = counts(wave, members, seen)
    size = tally.size + held
    if not over_threshold(tally.failed - progress.accepted_failures, size, policy.max_failure):
        return None
    reason = f"wave {wave + 1}: {tally.failed} of {size} devices failed (threshold {percent_text(policy.max_failure)})"
    if policy.on_failure == "pause":
        return Decision(replace(progress, state="paused", reason=reason), (), (f"paused: {reason}",))
    rolled = replace(progress, state="rolled-back", reason=reason)
    return Decision(rolled, tuple(_restore_all(members)), (f"rolling back: {reason}",))


def resume(progress: Progress, members: Mapping[str, Member], *, paused_for: timedelta = timedelta(0)) -> Progress:
    """Paused -> active, accepting the current wave's failures so far (only later ones count against it).

    The time spent paused (`paused_for`) does not count toward the wave's timeout or bake.
    """
    failed = sum(1 for m in members.values() if m.wave == progress.wave and m.status == "failed")

    def later(at: datetime | None) -> datetime | None:
        return None if at is None else at + paused_for

    return replace(
        progress,
        state="active",
        accepted_failures=failed,
        reason=None,
        wave_started_at=later(progress.wave_started_at),
        bake_started_at=later(progress.bake_started_at),
        last_held_at=later(progress.last_held_at),
    )


def roll_back(progress: Progress, members: Mapping[str, Member], reason: str) -> Decision:
    """An operator's abort with rollback: every device the rollout assigned gets its previous release."""
    return Decision(replace(progress, state="rolled-back", reason=reason), tuple(_restore_all(members)))


def _restore_all(members: Mapping[str, Member]) -> list[Action]:
    return [Restore(device_id) for device_id, m in sorted(members.items()) if m.status not in ("restored", "left")]


def _due(
    key: str, waves: Sequence[Wave], wave: int, seen: Mapping[str, Seen], members: Mapping[str, Member]
) -> list[str]:
    """Targets within the first `reach` of the canary order that this rollout has not assigned yet, in that order."""
    order = canary_order(key, seen)
    limit = reach(waves, len(order))[wave]
    return [device_id for device_id in order[:limit] if device_id not in members]


def holding(members: Mapping[str, Member], seen: Mapping[str, Seen], now: datetime) -> int:
    """Members holding a place of a paced rollout: told within `PENDING_HOLD`, online, not yet downloading.

    Unlike a wave's `pending` count (`counts`), this is over every wave, and a device told
    longer ago no longer holds a place.
    """
    held = 0
    for device_id, member in members.items():
        device = seen.get(device_id)
        if member.status != "assigned" or device is None or not device.online:
            continue
        if member.assigned_at is None or now - member.assigned_at < PENDING_HOLD:
            held += 1
    return held
