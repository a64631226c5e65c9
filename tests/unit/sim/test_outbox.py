"""The in-memory outbox keeps the agent's outbox rules: growing numbers, bounded, oldest dropped and counted."""

from __future__ import annotations

from edgefleet.sim.outbox import MemoryOutbox


def test_events_are_numbered_and_acknowledged_in_order() -> None:
    outbox = MemoryOutbox()
    assert [outbox.add({"n": n}) for n in range(3)] == [1, 2, 3]
    assert outbox.pending(limit=2).events == ((1, {"n": 0}), (2, {"n": 1}))
    outbox.acknowledge(2, dropped=0)
    assert outbox.pending().events == ((3, {"n": 2}),)


def test_the_oldest_are_dropped_past_the_bound_and_counted_until_told() -> None:
    outbox = MemoryOutbox(limit=2)
    for n in range(5):
        outbox.add({"n": n})
    pending = outbox.pending()
    assert [seq for seq, _ in pending.events] == [4, 5]
    assert pending.dropped == 3
    outbox.acknowledge(5, dropped=3)
    assert outbox.pending().dropped == 0
    assert outbox.pending().events == ()


def test_refused_events_count_as_dropped() -> None:
    outbox = MemoryOutbox()
    outbox.add({"n": 0})
    outbox.add({"n": 1})
    outbox.discard(1)
    assert outbox.pending().dropped == 1
    assert [seq for seq, _ in outbox.pending().events] == [2]


def test_numbers_continue_after_what_the_hub_recorded_in_an_earlier_run() -> None:
    outbox = MemoryOutbox()
    outbox.add({"n": 0})  # kept while the device could not reach the hub yet
    outbox.start_after(41)
    assert [seq for seq, _ in outbox.pending().events] == [42]
    assert outbox.add({"n": 1}) == 43
    outbox.start_after(10)  # never backwards
    assert outbox.add({"n": 2}) == 44


def test_the_latest_report_is_kept_until_delivered() -> None:
    outbox = MemoryOutbox()
    outbox.keep_report({"v": 1})
    outbox.keep_report({"v": 2})
    assert outbox.report() == {"v": 2}
    outbox.delivered_report({"v": 1})  # an older one was delivered: the newer stays
    assert outbox.report() == {"v": 2}
    outbox.delivered_report({"v": 2})
    assert outbox.report() is None
