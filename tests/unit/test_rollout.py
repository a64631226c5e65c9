"""The rollout controller's decisions: waves, bake, thresholds, pause/resume/rollback, offline devices and
newcomers, with property tests that it never assigns outside the target or twice."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.rollout import (
    PENDING_HOLD,
    Assign,
    Decision,
    Member,
    Policy,
    Rejoin,
    Restore,
    Seen,
    SetStatus,
    counts,
    decide,
    resume,
    roll_back,
    start,
)
from edgefleet.waves import canary_order, parse_waves, reach

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEPLOYMENT = "d1"


def policy(
    waves: str = "10%,100%",
    *,
    bake: int = 0,
    timeout: int = 600,
    max_failure: str = "0",
    on_failure="pause",
    max_pending: int | None = None,
):
    return Policy(
        waves=parse_waves(waves),
        bake=timedelta(seconds=bake),
        wave_timeout=timedelta(seconds=timeout),
        max_failure=Fraction(max_failure),
        on_failure=on_failure,
        max_pending=max_pending,
    )


def fleet(n: int, *, online: bool = True) -> dict[str, Seen]:
    return {f"dev-{i:04d}": Seen(online=online) for i in range(n)}


class Rollout:
    """A controller driven tick by tick, carrying out its own actions on an in-memory member table."""

    def __init__(self, pol: Policy, seen: dict[str, Seen]) -> None:
        self.policy, self.seen = pol, seen
        self.progress = start(T0)
        self.members: dict[str, Member] = {}
        self.restored: list[str] = []
        self.assigned_twice: list[str] = []
        self.events: list[str] = []
        self.now = T0

    def tick(self, now: datetime) -> Decision:
        self.now = now
        decision = decide(DEPLOYMENT, self.policy, self.progress, self.members, self.seen, now)
        self.apply(decision)
        return decision

    def apply(self, decision: Decision) -> None:
        self.progress = decision.progress
        self.events.extend(decision.events)
        for action in decision.actions:
            match action:
                case Assign(device_id, wave):
                    if device_id in self.members:
                        self.assigned_twice.append(device_id)
                    self.members[device_id] = Member(wave=wave, status="assigned", assigned_at=self.now)
                case Rejoin(device_id, wave):
                    assert self.members[device_id].status == "left"
                    self.members[device_id] = Member(wave=wave, status="assigned", assigned_at=self.now)
                case SetStatus(device_id, status):
                    self.members[device_id] = replace(self.members[device_id], status=status)
                case Restore(device_id):
                    self.restored.append(device_id)
                    self.members[device_id] = replace(self.members[device_id], status="restored")

    def report(self, device_ids, report: str) -> None:
        for device_id in device_ids:
            self.seen[device_id] = replace(self.seen[device_id], report=report)

    def wave(self, index: int) -> list[str]:
        return sorted(d for d, m in self.members.items() if m.wave == index)


def test_the_first_wave_is_the_canaries_of_the_canary_order() -> None:
    rollout = Rollout(policy("10%,100%"), fleet(20))
    rollout.tick(T0)
    expected = canary_order(DEPLOYMENT, rollout.seen)[:2]
    assert rollout.wave(0) == sorted(expected)
    # The same deployment picks the same canaries every time.
    again = Rollout(policy("10%,100%"), fleet(20))
    again.tick(T0)
    assert again.wave(0) == rollout.wave(0)


def test_a_wave_waits_for_its_devices_then_bakes_then_the_next_starts() -> None:
    rollout = Rollout(policy("10%,100%", bake=300), fleet(20))
    rollout.tick(T0)
    canaries = rollout.wave(0)
    rollout.report(canaries[:1], "updated")
    rollout.tick(T0 + timedelta(seconds=10))
    assert rollout.progress.bake_started_at is None
    assert len(rollout.members) == 2
    rollout.report(canaries[1:], "fetched")
    rollout.tick(T0 + timedelta(seconds=20))
    assert rollout.members[canaries[1]].status == "downloading"
    rollout.report(canaries[1:], "updated")
    rollout.tick(T0 + timedelta(seconds=30))
    assert rollout.progress.bake_started_at == T0 + timedelta(seconds=30)
    rollout.tick(T0 + timedelta(seconds=329))
    assert rollout.progress.wave == 0
    assert len(rollout.members) == 2
    rollout.tick(T0 + timedelta(seconds=330))
    assert rollout.progress.wave == 1
    assert len(rollout.members) == 20
    assert rollout.events == ["wave 1 baking", "wave 2 started"]
    rollout.report(rollout.wave(1), "updated")
    rollout.tick(T0 + timedelta(seconds=340))
    assert rollout.progress.state == "active"  # the last wave bakes too
    rollout.tick(T0 + timedelta(seconds=640))
    assert rollout.progress.state == "completed"


def test_a_device_unhealthy_during_the_bake_counts_as_failed_and_pauses() -> None:
    rollout = Rollout(policy("10%,100%", bake=300, max_failure="0.05"), fleet(20))
    rollout.tick(T0)
    rollout.report(rollout.wave(0), "updated")
    rollout.tick(T0 + timedelta(seconds=10))
    rollout.report(rollout.wave(0)[:1], "unhealthy")
    decision = rollout.tick(T0 + timedelta(seconds=100))
    assert rollout.members[rollout.wave(0)[0]].status == "failed"
    assert decision.progress.state == "paused"
    assert decision.progress.reason == "wave 1: 1 of 2 devices failed (threshold 5%)"
    # Paused: nothing more is assigned, however long it waits.
    rollout.tick(T0 + timedelta(days=1))
    assert len(rollout.members) == 2


def test_unhealthy_after_its_wave_is_judged_does_not_count() -> None:
    rollout = Rollout(policy("10%,100%"), fleet(20))
    rollout.tick(T0)
    rollout.report(rollout.wave(0), "updated")
    rollout.tick(T0 + timedelta(seconds=1))
    assert rollout.progress.wave == 1
    rollout.report(rollout.wave(0), "unhealthy")
    rollout.tick(T0 + timedelta(seconds=2))
    assert {rollout.members[d].status for d in rollout.wave(0)} == {"updated"}
    assert rollout.progress.state == "active"


def test_threshold_arithmetic_with_small_waves() -> None:
    # 5% of a wave of 20: one failure is within the threshold, two are not.
    rollout = Rollout(policy("20,100%", max_failure="0.05"), fleet(40))
    rollout.tick(T0)
    wave = rollout.wave(0)
    assert len(wave) == 20
    rollout.report(wave[:1], "failed")
    rollout.report(wave[1:], "updated")
    rollout.tick(T0 + timedelta(seconds=1))
    assert rollout.progress.state == "active"
    assert rollout.progress.wave == 1
    rollout.report(rollout.wave(1)[:2], "failed")
    rollout.tick(T0 + timedelta(seconds=2))
    assert rollout.progress.state == "paused"  # 2 of 20 > 5%


def test_resume_accepts_the_failures_so_far_only() -> None:
    rollout = Rollout(policy("10%,100%", max_failure="0.1"), fleet(40))
    rollout.tick(T0)
    wave = rollout.wave(0)
    rollout.report(wave[:1], "failed")  # 1 of 4 > 10%
    rollout.tick(T0 + timedelta(seconds=1))
    assert rollout.progress.state == "paused"
    rollout.progress = resume(rollout.progress, rollout.members)
    assert rollout.progress.accepted_failures == 1
    rollout.report(wave[1:], "updated")
    rollout.tick(T0 + timedelta(seconds=2))
    assert rollout.progress.wave == 1
    assert rollout.progress.accepted_failures == 0
    rollout.report(rollout.wave(1)[:5], "failed")  # 5 of 36 > 10%
    rollout.tick(T0 + timedelta(seconds=3))
    assert rollout.progress.state == "paused"


def test_rollback_on_failure_restores_every_device_it_assigned() -> None:
    rollout = Rollout(policy("10%,50%,100%", max_failure="0.2", on_failure="rollback"), fleet(20))
    rollout.tick(T0)
    rollout.report(rollout.wave(0), "updated")
    rollout.tick(T0 + timedelta(seconds=1))
    second = rollout.wave(1)
    rollout.report(second[:3], "failed")  # 3 of 8 > 20%
    decision = rollout.tick(T0 + timedelta(seconds=2))
    assert decision.progress.state == "rolled-back"
    assert sorted(rollout.restored) == sorted(rollout.members)
    assert len(rollout.members) == 10
    rollout.tick(T0 + timedelta(days=1))  # finished: nothing more happens
    assert len(rollout.members) == 10
    assert len(rollout.restored) == 10


def test_abort_with_rollback_restores_and_stops() -> None:
    rollout = Rollout(policy("50%,100%"), fleet(4))
    rollout.tick(T0)
    rollout.apply(roll_back(rollout.progress, rollout.members, "aborted by alice"))
    assert rollout.progress.state == "rolled-back"
    assert len(rollout.restored) == 2


def test_offline_devices_are_counted_apart_when_the_wave_times_out_and_updated_when_back() -> None:
    seen = fleet(10)
    rollout = Rollout(policy("50%,100%", timeout=600), seen)
    rollout.tick(T0)
    wave = rollout.wave(0)
    away, stuck, fine = wave[0], wave[1], wave[2:]
    seen[away] = Seen(online=False)
    rollout.report(fine, "updated")
    rollout.tick(T0 + timedelta(seconds=599))
    tally = counts(0, rollout.members, seen)
    assert (tally.size, tally.updated, tally.offline, tally.pending) == (5, 3, 1, 1)
    assert rollout.progress.wave == 0  # waiting
    rollout.tick(T0 + timedelta(seconds=600))
    assert rollout.members[stuck].status == "failed"  # online, but never finished in time
    assert rollout.members[away].status == "assigned"  # offline: counted apart, not failed
    assert rollout.events[0] == "wave 1 timed out with 2 devices unfinished"
    assert rollout.progress.state == "paused"  # one failure of five at 0%
    rollout.progress = resume(rollout.progress, rollout.members)
    rollout.tick(T0 + timedelta(seconds=601))
    assert rollout.progress.wave == 1
    seen[away] = Seen(online=True, report="updated")  # back, and it installs what it was assigned
    rollout.tick(T0 + timedelta(seconds=602))
    assert rollout.members[away].status == "updated"


def test_devices_that_join_mid_rollout_take_their_place() -> None:
    seen = fleet(10)
    rollout = Rollout(policy("50%,100%"), seen)
    rollout.tick(T0)
    first = set(rollout.wave(0))
    for i in range(10, 30):
        seen[f"dev-{i:04d}"] = Seen(online=True)
    rollout.tick(T0 + timedelta(seconds=1))
    # Half of the 30 targets are now in the first wave: the newcomers among them join it.
    assert first <= set(rollout.wave(0))
    assert len(rollout.members) == 15
    assert set(rollout.wave(0)) == set(canary_order(DEPLOYMENT, seen)[:15]) | first


def test_a_completed_deployment_assigns_newcomers_at_once() -> None:
    seen = fleet(3)
    rollout = Rollout(policy("100%"), seen)
    rollout.tick(T0)
    rollout.report(list(seen), "updated")
    rollout.tick(T0 + timedelta(seconds=1))
    assert rollout.progress.state == "completed"
    seen["dev-new"] = Seen(online=True)
    decision = rollout.tick(T0 + timedelta(seconds=2))
    assert decision.actions == (Assign("dev-new", 0),)


def test_devices_that_leave_the_target_are_not_counted() -> None:
    seen = fleet(4)
    rollout = Rollout(policy("100%"), seen)
    rollout.tick(T0)
    gone = rollout.wave(0)[0]
    del seen[gone]
    rollout.report(list(seen), "updated")
    rollout.tick(T0 + timedelta(seconds=1))
    assert rollout.members[gone].status == "left"
    assert rollout.progress.state == "completed"


def test_an_empty_target_completes_and_later_devices_get_the_release() -> None:
    seen: dict[str, Seen] = {}
    rollout = Rollout(policy("10%,100%"), seen)
    rollout.tick(T0)
    assert rollout.progress.state == "completed"
    seen["dev-a"] = Seen(online=True)
    rollout.tick(T0 + timedelta(seconds=1))
    assert list(rollout.members) == ["dev-a"]


# --- paced rollouts ---------------------------------------------------------------------------


def pending(rollout: Rollout) -> list[str]:
    """Members holding a place of the pace: told within PENDING_HOLD, online, not yet downloading."""
    return [
        d
        for d, m in rollout.members.items()
        if m.status == "assigned"
        and rollout.seen.get(d, Seen(online=False)).online
        and m.assigned_at is not None
        and rollout.now - m.assigned_at < PENDING_HOLD
    ]


def test_a_paced_wave_tells_devices_in_canary_order_as_earlier_ones_begin() -> None:
    rollout = Rollout(policy("100%", max_pending=10), fleet(40))
    order = canary_order(DEPLOYMENT, rollout.seen)
    rollout.tick(T0)
    assert rollout.wave(0) == sorted(order[:10])
    rollout.tick(T0 + timedelta(seconds=2))
    assert len(rollout.members) == 10  # nobody began: nobody more is told
    rollout.report(order[:4], "fetched")
    rollout.tick(T0 + timedelta(seconds=4))
    assert [rollout.members[d].status for d in order[:4]] == ["downloading"] * 4
    assert rollout.wave(0) == sorted(order[:14])
    rollout.report(order[4:14], "updated")  # straight to updated (the fetch fell between two passes)
    rollout.tick(T0 + timedelta(seconds=6))
    assert rollout.wave(0) == sorted(order[:24])
    assert rollout.progress.state == "active"
    assert rollout.progress.bake_started_at is None
    for second in range(8, 40, 2):
        rollout.report(pending(rollout), "updated")
        rollout.tick(T0 + timedelta(seconds=second))
        assert len(pending(rollout)) <= 10
    rollout.report(order[:4], "updated")
    rollout.tick(T0 + timedelta(seconds=42))
    assert len(rollout.members) == 40
    assert rollout.progress.state == "completed"


def test_offline_devices_and_those_told_long_ago_hold_no_place() -> None:
    rollout = Rollout(policy("100%", max_pending=5), fleet(20))
    order = canary_order(DEPLOYMENT, rollout.seen)
    rollout.tick(T0)
    for device_id in order[:3]:
        rollout.seen[device_id] = Seen(online=False)
    rollout.tick(T0 + timedelta(seconds=2))
    assert rollout.wave(0) == sorted(order[:8])  # three offline: three more told
    rollout.tick(T0 + PENDING_HOLD - timedelta(seconds=1))
    assert len(rollout.members) == 8
    rollout.tick(T0 + PENDING_HOLD)  # the first two online ones never began: no longer holding the rest
    assert rollout.wave(0) == sorted(order[:10])


def test_a_paced_wave_times_out_from_the_last_pass_that_held_devices_back() -> None:
    rollout = Rollout(policy("100%", timeout=600, max_pending=1), fleet(2))
    first, second = canary_order(DEPLOYMENT, rollout.seen)
    rollout.tick(T0)
    for seconds in (60, 119):  # the first has not begun: the second waits
        rollout.tick(T0 + timedelta(seconds=seconds))
        assert list(rollout.members) == [first]
    assert rollout.progress.last_held_at == T0 + timedelta(seconds=119)
    rollout.report([first], "updated")
    rollout.tick(T0 + timedelta(seconds=130))
    assert rollout.members[second].status == "assigned"
    rollout.tick(T0 + timedelta(seconds=718))  # 599 s after the last pass that held it back
    assert rollout.progress.state == "active"
    rollout.tick(T0 + timedelta(seconds=719))
    assert rollout.members[second].status == "failed"
    assert rollout.events == [
        "wave 1 timed out with 1 devices unfinished",
        "paused: wave 1: 1 of 2 devices failed (threshold 0%)",
    ]


def test_a_wave_with_devices_held_back_does_not_time_out() -> None:
    rollout = Rollout(policy("100%", timeout=60, max_pending=2), fleet(6))
    for seconds in range(0, 600, 10):  # nobody begins; each is told as the one before stops holding a place
        rollout.tick(T0 + timedelta(seconds=seconds))
        if len(rollout.members) < 6:
            assert rollout.progress.state == "active"
            assert rollout.progress.bake_started_at is None
            assert not any(m.status == "failed" for m in rollout.members.values())
    assert len(rollout.members) == 6
    assert rollout.progress.state == "paused"  # 60 s after the last was told: timed out, failed


def test_an_unpaced_waves_timeout_counts_from_its_start_whatever_joins_later() -> None:
    seen = fleet(4)
    rollout = Rollout(policy("100%", timeout=600), seen)
    rollout.tick(T0)
    for i in range(4, 10):  # newcomers keep joining the wave
        seen[f"dev-{i:04d}"] = Seen(online=True)
        rollout.tick(T0 + timedelta(seconds=100 * (i - 3)))
    assert rollout.progress.last_held_at is None
    rollout.tick(T0 + timedelta(seconds=600))
    assert rollout.progress.state == "paused"
    assert rollout.events[0] == "wave 1 timed out with 10 devices unfinished"


def test_time_paused_does_not_count_toward_a_paced_waves_timeout() -> None:
    rollout = Rollout(policy("100%", timeout=600, max_pending=1), fleet(2))
    first, second = canary_order(DEPLOYMENT, rollout.seen)
    rollout.tick(T0)
    rollout.tick(T0 + timedelta(seconds=100))  # held back: the clock counts from here
    rollout.report([first], "updated")
    rollout.tick(T0 + timedelta(seconds=110))
    rollout.progress = replace(rollout.progress, state="paused")
    rollout.progress = resume(rollout.progress, rollout.members, paused_for=timedelta(hours=2))
    assert rollout.progress.last_held_at == T0 + timedelta(hours=2, seconds=100)
    rollout.tick(T0 + timedelta(hours=2, seconds=699))
    assert rollout.members[second].status == "assigned"
    rollout.tick(T0 + timedelta(hours=2, seconds=700))
    assert rollout.members[second].status == "failed"


def test_dropping_the_pace_mid_wave_keeps_the_waves_clock() -> None:
    paced = policy("100%", timeout=600, max_pending=1)
    rollout = Rollout(paced, fleet(3))
    order = canary_order(DEPLOYMENT, rollout.seen)
    rollout.tick(T0)
    rollout.tick(T0 + timedelta(seconds=3000))  # the first stopped holding a place: the second told
    rollout.tick(T0 + timedelta(seconds=3010))  # the third held back behind the second
    rollout.policy = replace(paced, max_pending=None)
    rollout.tick(T0 + timedelta(seconds=3020))  # told now, the wave long past its start + timeout
    assert [rollout.members[d].status for d in order] == ["assigned"] * 3
    assert rollout.progress.state == "active"
    rollout.tick(T0 + timedelta(seconds=3610))
    assert rollout.progress.state == "paused"


def test_devices_coming_back_wait_for_the_pace_too() -> None:
    seen = fleet(50)
    rollout = Rollout(policy("100%", timeout=3600), seen)
    rollout.tick(T0)
    away = {d: seen.pop(d) for d in list(seen)}  # a higher-priority deployment took them all
    rollout.tick(T0 + timedelta(seconds=1))
    assert all(m.status == "left" for m in rollout.members.values())
    seen.update(away)  # and was aborted: they come back at once
    rollout.policy = replace(rollout.policy, max_pending=5)
    decision = rollout.tick(T0 + timedelta(seconds=2))
    assert sum(isinstance(a, Rejoin) for a in decision.actions) == 5
    rollout.report([d for d, m in rollout.members.items() if m.status == "assigned"], "fetched")
    decision = rollout.tick(T0 + timedelta(seconds=4))
    assert sum(isinstance(a, Rejoin) for a in decision.actions) == 5  # as those began
    assert not rollout.assigned_twice


def test_a_paced_waves_threshold_is_a_share_of_the_whole_wave() -> None:
    paced = Rollout(policy("100%", max_failure="0.1", max_pending=10), fleet(100))
    order = canary_order(DEPLOYMENT, paced.seen)
    paced.tick(T0)
    paced.report(order[:5], "failed")  # 5 of the 100: under 10 %, though half of those told so far
    paced.tick(T0 + timedelta(seconds=2))
    assert paced.progress.state == "active"
    assert len(paced.members) == 15
    paced.report(order[5:15], "failed")
    paced.tick(T0 + timedelta(seconds=4))
    assert paced.progress.state == "paused"
    assert paced.progress.reason == "wave 1: 15 of 100 devices failed (threshold 10%)"
    assert len(paced.members) == 25  # this pass told ten more before it judged


def test_without_a_pace_a_wave_is_told_at_once() -> None:
    rollout = Rollout(policy("100%"), fleet(300))
    rollout.tick(T0)
    assert len(rollout.members) == 300


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=60),
    spec=st.sampled_from(["100%", "1%,100%", "10%,50%,100%", "1,5,100%", "2,50%,100%"]),
    max_failure=st.sampled_from(["0", "0.05", "0.5"]),
    on_failure=st.sampled_from(["pause", "rollback"]),
    script=st.lists(
        st.tuples(
            st.sampled_from(["updated", "failed", "fetched", "unhealthy", "offline", "join", "leave", "resume"]),
            st.integers(min_value=0, max_value=10**6),
        ),
        max_size=60,
    ),
    max_pending=st.sampled_from([None, 1, 3, 10]),
)
def test_never_assigns_outside_the_target_nor_twice(size, spec, max_failure, on_failure, script, max_pending) -> None:
    seen = fleet(size)
    everyone = set(seen)
    pol = policy(spec, bake=5, timeout=30, max_failure=max_failure, on_failure=on_failure, max_pending=max_pending)
    rollout = Rollout(pol, seen)
    now = T0
    joined = size
    for step, (what, pick) in enumerate(script):
        now += timedelta(seconds=7)
        ids = sorted(seen)
        target = ids[pick % len(ids)] if ids else None
        if what == "join":
            device_id = f"dev-{joined:04d}"
            joined += 1
            seen[device_id] = Seen(online=True)
            everyone.add(device_id)
        elif what == "leave" and target:
            del seen[target]
        elif what == "resume" and rollout.progress.state == "paused":
            rollout.progress = resume(rollout.progress, rollout.members)
        elif what == "offline" and target:
            seen[target] = Seen(online=False)
        elif target and target in rollout.members:
            seen[target] = Seen(online=True, report=what)  # type: ignore[arg-type]
        before = set(seen)
        decision = rollout.tick(now)
        told = [a.device_id for a in decision.actions if isinstance(a, Assign | Rejoin)]
        # What held places once this pass had noticed the reports, before it told anyone.
        held_before = len(pending(rollout)) - sum(1 for d in told if seen[d].online)
        for action in decision.actions:
            if isinstance(action, Assign | Rejoin):
                assert action.device_id in before, f"step {step}: assigned outside the target"
                assert action.wave <= rollout.progress.wave or rollout.progress.state == "completed"
        assert not rollout.assigned_twice
        assert set(rollout.members) <= everyone
        if max_pending is not None and told:
            assert held_before + len(told) <= max_pending, f"step {step}: more than the pace told"
            assert len(pending(rollout)) <= max_pending
        if rollout.progress.state in ("paused", "rolled-back"):
            assert rollout.progress.reason
        if rollout.progress.state == "rolled-back":
            assert all(m.status in ("restored", "left") for m in rollout.members.values())
        if rollout.progress.state == "active":
            # Exactly the reached prefix of the canary order (plus earlier members) is assigned.
            order = canary_order(DEPLOYMENT, seen)
            reached = set(order[: reach(rollout.policy.waves, len(order))[rollout.progress.wave]])
            if max_pending is None:
                assert reached <= set(rollout.members)
            elif not reached <= set(rollout.members):  # paced: held back only once the pace is full
                assert len(told) + held_before >= max_pending


@given(size=st.integers(min_value=1, max_value=5000), spec=st.sampled_from(["1%,10%,50%,100%", "5,50,100%"]))
def test_wave_sizes_follow_the_spec(size: int, spec: str) -> None:
    seen = fleet(size)
    rollout = Rollout(policy(spec), seen)
    rollout.tick(T0)
    assert len(rollout.members) == reach(parse_waves(spec), size)[0]


def test_a_device_that_left_and_came_back_rejoins_at_the_current_wave() -> None:
    seen = fleet(4)
    rollout = Rollout(policy("50%,100%"), seen)
    rollout.tick(T0)
    gone = rollout.wave(0)[0]
    kept = seen.pop(gone)
    rollout.tick(T0 + timedelta(seconds=1))
    assert rollout.members[gone].status == "left"
    seen[gone] = kept
    decision = rollout.tick(T0 + timedelta(seconds=2))
    assert Rejoin(gone, 0) in decision.actions
    assert rollout.members[gone] == Member(wave=0, status="assigned", assigned_at=T0 + timedelta(seconds=2))
    assert not rollout.assigned_twice


def test_rollback_in_the_pass_that_assigns_newcomers_restores_them_too() -> None:
    seen = fleet(10)
    rollout = Rollout(policy("50%,100%", on_failure="rollback"), seen)
    rollout.tick(T0)
    rollout.report(rollout.wave(0)[:1], "failed")
    for i in range(10, 20):
        seen[f"dev-{i:04d}"] = Seen(online=True)
    decision = rollout.tick(T0 + timedelta(seconds=1))
    assigned_now = {a.device_id for a in decision.actions if isinstance(a, Assign)}
    restored_now = {a.device_id for a in decision.actions if isinstance(a, Restore)}
    assert assigned_now
    assert assigned_now <= restored_now
    assert decision.progress.state == "rolled-back"


def test_fewer_waves_than_already_reached_finish_the_rollout() -> None:
    rollout = Rollout(policy("10%,50%,100%"), fleet(10))
    rollout.tick(T0)
    rollout.report(rollout.wave(0), "updated")
    rollout.tick(T0 + timedelta(seconds=1))
    rollout.report(rollout.wave(1), "updated")
    rollout.tick(T0 + timedelta(seconds=2))
    assert rollout.progress.wave == 2
    rollout.policy = policy("100%")  # applied again with a single wave
    rollout.report(list(rollout.seen), "updated")
    rollout.tick(T0 + timedelta(seconds=3))
    assert rollout.progress.state == "completed"


def test_a_wave_that_reaches_no_new_device_does_not_bake() -> None:
    rollout = Rollout(policy("1,2,3,100%", bake=600), fleet(1))
    rollout.tick(T0)
    rollout.report(list(rollout.seen), "updated")
    rollout.tick(T0 + timedelta(seconds=1))
    rollout.tick(T0 + timedelta(seconds=602))
    assert rollout.progress.state == "completed"
    assert rollout.events.count("wave 1 baking") == 1
    assert "wave 2 baking" not in rollout.events


def test_time_spent_paused_does_not_count_toward_the_bake() -> None:
    rollout = Rollout(policy("50%,100%", bake=600), fleet(4))
    rollout.tick(T0)
    rollout.report(rollout.wave(0), "updated")
    rollout.tick(T0 + timedelta(seconds=100))  # baking from 100 s
    rollout.progress = replace(rollout.progress, state="paused")
    rollout.progress = resume(rollout.progress, rollout.members, paused_for=timedelta(seconds=500))
    rollout.tick(T0 + timedelta(seconds=701))
    assert rollout.progress.wave == 0  # 601 s since the bake began, but 500 of them paused
    rollout.tick(T0 + timedelta(seconds=1200))
    assert rollout.progress.wave == 1
