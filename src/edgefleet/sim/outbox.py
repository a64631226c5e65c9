"""A simulated device's outbox, in memory: the agent's outbox semantics (`agent.outbox`) without a file per device.

Events get a sequence number that only grows, the oldest are dropped (and counted) past the
bound, batches go out oldest first, and the latest state report is kept until delivered.
Nothing survives the process: on its first connection a device asks the hub which number
it recorded last (`start_after`), so events of a re-run are never mistaken for old ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from edgefleet.agent.bounds import DEFAULT_BOUNDS
from edgefleet.agent.outbox import Pending


class MemoryOutbox:
    """Events and the latest report of one simulated device, until the hub has them."""

    def __init__(self, *, limit: int = DEFAULT_BOUNDS.outbox_events) -> None:
        self._limit = limit
        self._events: deque[tuple[int, dict[str, Any]]] = deque()
        self._next = 1
        self._dropped = 0
        self._report: dict[str, Any] | None = None

    def start_after(self, seq: int) -> None:
        """The hub has recorded events up to `seq` (from an earlier run): number new ones after it."""
        oldest = self._events[0][0] if self._events else self._next
        shift = max(0, seq + 1 - oldest)
        if shift:
            self._events = deque((number + shift, body) for number, body in self._events)
            self._next += shift

    def add(self, event: Mapping[str, Any]) -> int:
        """Keep `event` (without `seq`); returns its sequence number. Drops the oldest when full."""
        seq = self._next
        self._next += 1
        self._events.append((seq, dict(event)))
        while len(self._events) > self._limit:
            self._events.popleft()
            self._dropped += 1
        return seq

    def pending(self, limit: int = DEFAULT_BOUNDS.event_batch) -> Pending:
        return Pending(tuple(list(self._events)[:limit]), self._dropped)

    def acknowledge(self, through: int, *, dropped: int) -> None:
        """The hub has every event up to `through`, and was told of `dropped` dropped ones."""
        while self._events and self._events[0][0] <= through:
            self._events.popleft()
        self._dropped = max(0, self._dropped - dropped)

    def discard(self, through: int) -> None:
        """Drop the events up to `through` undelivered (the hub refused them); they count as dropped."""
        while self._events and self._events[0][0] <= through:
            self._events.popleft()
            self._dropped += 1

    def keep_report(self, properties: Mapping[str, Any]) -> None:
        self._report = dict(properties)

    def report(self) -> dict[str, Any] | None:
        return None if self._report is None else dict(self._report)

    def delivered_report(self, properties: Mapping[str, Any]) -> None:
        """Forget the kept report if it still is `properties` (a newer one stays)."""
        if self._report == dict(properties):
            self._report = None
