"""The agent's outbox: events survive a restart, leave in order, are bounded, and dropped ones are counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.outbox import Outbox, OutboxError


def test_events_survive_a_restart_and_leave_oldest_first(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    seqs = [outbox.add({"status": f"s{i}"}) for i in range(5)]
    outbox.close()

    again = Outbox(tmp_path / "outbox.db")
    pending = again.pending(limit=3)
    assert [seq for seq, _ in pending.events] == seqs[:3]
    assert [body["status"] for _, body in pending.events] == ["s0", "s1", "s2"]
    again.acknowledge(seqs[2], dropped=0)
    assert [body["status"] for _, body in again.pending().events] == ["s3", "s4"]


def test_sequence_numbers_only_grow_even_after_everything_was_delivered(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    first = outbox.add({"n": 1})
    outbox.acknowledge(first, dropped=0)
    outbox.close()
    assert Outbox(tmp_path / "outbox.db").add({"n": 2}) > first  # the hub skips numbers it has seen


def test_when_full_the_oldest_are_dropped_and_counted_until_the_hub_is_told(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db", bounds=Bounds(outbox_events=3))
    for i in range(7):
        outbox.add({"n": i})
    pending = outbox.pending()
    assert [body["n"] for _, body in pending.events] == [4, 5, 6]
    assert pending.dropped == 4
    outbox.add({"n": 7})  # one more dropped while the batch was on its way
    outbox.acknowledge(pending.events[-1][0], dropped=pending.dropped)
    assert outbox.dropped() == 1
    assert [body["n"] for _, body in outbox.pending().events] == [7]


def test_an_oversized_event_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    with pytest.raises(OutboxError, match="over the limit"):
        outbox.add({"logs": "x" * DEFAULT_BOUNDS.event_bytes})
    assert outbox.pending().events == ()


def test_the_latest_report_replaces_older_ones_and_a_delivered_one_is_forgotten(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.keep_report({"v": 1})
    outbox.keep_report({"v": 2})
    assert outbox.report() == {"v": 2}
    outbox.delivered_report({"v": 1})  # an older one was delivered: the newer one stays
    assert outbox.report() == {"v": 2}
    outbox.delivered_report({"v": 2})
    assert outbox.report() is None


def test_an_unusable_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "outbox.db").write_bytes(b"not a database" * 100)
    with pytest.raises(OutboxError, match="unusable outbox"):
        Outbox(tmp_path / "outbox.db")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2), max_size=40), st.integers(min_value=1, max_value=6))
def test_delivered_events_are_in_order_without_gaps_except_what_was_counted(
    tmp_path_factory: pytest.TempPathFactory, moves: list[int], limit: int
) -> None:
    """Adds (0), partial deliveries (1) and full deliveries (2) in any order."""
    outbox = Outbox(tmp_path_factory.mktemp("outbox") / "outbox.db", bounds=Bounds(outbox_events=limit))
    added, delivered, told_dropped = 0, [], 0
    for move in moves:
        if move == 0:
            outbox.add({"n": added})
            added += 1
            continue
        pending = outbox.pending(limit=1 if move == 1 else 100)
        if pending.events:
            delivered.extend(body["n"] for _, body in pending.events)
            outbox.acknowledge(pending.events[-1][0], dropped=pending.dropped)
            told_dropped += pending.dropped
    rest = outbox.pending(limit=1000)
    delivered.extend(body["n"] for _, body in rest.events)
    assert delivered == sorted(delivered)
    assert len(delivered) + told_dropped + rest.dropped == added


def test_an_event_added_again_under_its_key_is_kept_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db", bounds=Bounds(outbox_events=3))
    first = outbox.add({"n": 1}, key="transaction 1")
    assert outbox.add({"n": 1}, key="transaction 1") == first  # bookkeeping redone after a crash
    outbox.acknowledge(first, dropped=0)
    assert outbox.add({"n": 1}, key="transaction 1") == first  # delivered already: still not again
    assert [body for _, body in outbox.pending().events] == []
    second = outbox.add({"n": 2}, key="transaction 2")
    assert outbox.add({"n": 3}) != outbox.add({"n": 3})  # without a key, every add is an event
    assert [body["n"] for _, body in outbox.pending().events] == [2, 3, 3]
    assert second > first
    for n in range(4, 8):  # only the last `limit` keys are remembered
        outbox.add({"n": n}, key=f"transaction {n}")
    assert outbox._db.execute("SELECT COUNT(*) FROM added").fetchone()[0] == 3
