"""The device path's caches: bounded, expiring, and never storing a read that an invalidation overtook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.hub.devicecache import DeviceCaches, Expiring
from edgefleet.hub.lastseen import LastSeen
from edgefleet.hub.notify import Notifier


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cache(capacity: int = 10, ttl: float = 60) -> tuple[Expiring[str], Clock]:
    clock = Clock()
    return Expiring(capacity=capacity, ttl=ttl, clock=clock), clock


def test_a_value_is_held_until_its_time_is_up() -> None:
    held, clock = cache(ttl=60)
    held.put("d", "v", held.ticket())
    clock.now = 60
    assert held.get("d") == "v"
    clock.now = 60.5
    assert held.get("d") is None
    assert len(held) == 0


def test_the_least_recently_used_goes_first() -> None:
    held, _ = cache(capacity=2)
    for key in "abc"[:2]:
        held.put(key, key, held.ticket())
    assert held.get("a") == "a"  # used: b is now the oldest
    held.put("c", "c", held.ticket())
    assert (held.get("a"), held.get("b"), held.get("c")) == ("a", None, "c")


def test_a_read_overtaken_by_an_invalidation_is_not_stored() -> None:
    held, _ = cache()
    ticket = held.ticket()  # a read of d begins ...
    held.invalidate(["d"])  # ... a change to d commits meanwhile ...
    held.put("d", "stale", ticket)  # ... and the read, which may predate it, ends
    assert held.get("d") is None
    held.put("e", "fine", ticket)  # another device's read is not affected
    assert held.get("e") == "fine"
    held.put("d", "fresh", held.ticket())  # a read that began after the change is stored
    assert held.get("d") == "fresh"


def test_a_change_is_known_until_the_key_is_stored_again() -> None:
    held, _ = cache(capacity=2)
    assert not held.changed("d")  # never held, never invalidated: nothing known
    held.put("d", "v", held.ticket())
    assert not held.changed("d")
    held.invalidate(["d"])
    assert held.changed("d")
    held.put("d", "w", held.ticket())
    assert not held.changed("d")
    held.invalidate(["d", "e", "f"])  # bounded: the oldest knowledge goes first
    assert (held.changed("d"), held.changed("e"), held.changed("f")) == (False, True, True)
    held.clear()
    assert not held.changed("e")


def test_a_clear_stops_every_read_under_way() -> None:
    held, _ = cache()
    ticket = held.ticket()
    held.put("a", "a", ticket)
    held.clear()
    assert held.get("a") is None
    held.put("b", "b", ticket)
    assert held.get("b") is None
    held.put("b", "b", held.ticket())
    assert held.get("b") == "b"


def test_forgotten_invalidations_stop_every_older_read() -> None:
    """The record of invalidations is bounded too: once one is forgotten, reads older than it are not stored."""
    held, _ = cache(capacity=2)
    ticket = held.ticket()
    held.invalidate(["a"])
    held.invalidate(["b"])
    held.invalidate(["c"])  # a's invalidation is forgotten
    held.put("a", "stale", ticket)
    assert held.get("a") is None
    held.put("a", "fresh", held.ticket())
    assert held.get("a") == "fresh"


@given(
    st.lists(st.tuples(st.sampled_from(["begin", "end", "invalidate", "clear"]), st.sampled_from("abc")), max_size=40)
)
def test_no_stored_value_predates_its_key_s_latest_invalidation(operations: list[tuple[str, str]]) -> None:
    """Property: reads overlap invalidations in any order; whatever is held was read after the last change to it."""
    held, _ = cache(capacity=2)
    changed = dict.fromkeys("abc", 0)  # per key, how many changes so far
    under_way: list[tuple[str, int, int]] = []  # (key, ticket, changes seen when the read began)
    for operation, key in operations:
        if operation == "begin":
            under_way.append((key, held.ticket(), changed[key]))
        elif operation == "end" and under_way:
            read_key, ticket, version = under_way.pop(0)
            held.put(read_key, f"{read_key}{version}", ticket)
        elif operation == "invalidate":
            changed[key] += 1
            held.invalidate([key])
        elif operation == "clear":
            changed = {k: v + 1 for k, v in changed.items()}
            held.clear()
        for k in "abc":
            value = held.get(k)
            assert value is None or value == f"{k}{changed[k]}"


def test_caches_forget_what_the_notifier_is_told_and_wake_after() -> None:
    notifier = Notifier()
    caches = DeviceCaches(capacity=10, ttl=60)
    notifier.watch(caches.changed)
    caches.devices.put("a", object(), caches.devices.ticket())  # type: ignore[arg-type]
    caches.devices.put("b", object(), caches.devices.ticket())  # type: ignore[arg-type]
    notifier.forget(["a"])
    assert caches.devices.get("a") is None
    assert caches.devices.get("b") is not None
    notifier.wake_all()
    assert caches.devices.get("b") is None


def test_caches_are_not_used_while_they_may_miss_changes() -> None:
    listening = [False]
    caches = DeviceCaches(capacity=10, ttl=60, usable=lambda: False)
    assert not caches.usable
    caches.use_while(lambda: listening[0])
    assert not caches.usable
    listening[0] = True
    assert caches.usable


T0 = datetime(2026, 12, 5, tzinfo=UTC)


def test_last_seen_is_noted_once_per_granularity_and_written_in_one_batch() -> None:
    seen = LastSeen(capacity=100, granularity=timedelta(seconds=30))
    seen.note("a", T0, recorded=None)
    seen.note("a", T0 + timedelta(seconds=10), recorded=None)  # within 30 s of the last note: nothing new
    seen.note("b", T0, recorded=T0 - timedelta(seconds=5))  # the record is recent enough
    seen.note("c", T0, recorded=T0 - timedelta(minutes=5))
    batches: list[dict[str, datetime]] = []
    assert seen.flush(batches.append) == 2
    assert batches == [{"a": T0, "c": T0}]
    assert seen.flush(batches.append) == 0
    assert len(batches) == 1
    seen.note("a", T0 + timedelta(seconds=31), recorded=None)
    assert seen.pending() == 1


def test_a_failed_write_keeps_what_was_noted_for_the_next() -> None:
    seen = LastSeen(capacity=100)
    seen.note("a", T0, recorded=None)

    def broken(_batch: dict[str, datetime]) -> None:
        raise RuntimeError("database away")

    with pytest.raises(RuntimeError):
        seen.flush(broken)
    batches: list[dict[str, datetime]] = []
    assert seen.flush(batches.append) == 1
    assert batches == [{"a": T0}]


def test_last_seen_remembers_a_bounded_number_of_devices() -> None:
    seen = LastSeen(capacity=2)
    for device in "abc":
        seen.note(device, T0, recorded=None)
    seen.flush(lambda _batch: None)
    seen.note("a", T0 + timedelta(seconds=1), recorded=None)  # forgotten (oldest): noted again
    seen.note("c", T0 + timedelta(seconds=1), recorded=None)  # remembered: not
    batches: list[dict[str, datetime]] = []
    seen.flush(batches.append)
    assert batches == [{"a": T0 + timedelta(seconds=1)}]
