"""When devices were last heard from: noted per request in memory, written in one batch every few seconds.

A device's `last_seen_at` only needs `LAST_SEEN_GRANULARITY` of precision (rollouts count a
device offline after minutes), so a request notes the time here instead of writing it, and
`flush` (run by the API app every `last_seen_flush_seconds`, and once more as it stops)
writes every noted device in one statement per batch. A device is noted again only once
its last noted time is `granularity` old. What a process noted but had not yet flushed when
it died is lost: the device's next request notes it again.

Another, with no granularity, notes the devices that fetched new director targets
(`Hub.fetches`, the `downloading` count of a rollout), which the API app writes every
`fetch_flush_seconds` when it holds any.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta

LAST_SEEN_GRANULARITY = timedelta(seconds=30)


class LastSeen:
    """One process's devices heard from since the last flush, and when each was last noted (bounded)."""

    def __init__(self, *, capacity: int, granularity: timedelta = LAST_SEEN_GRANULARITY) -> None:
        self._capacity = capacity
        self._granularity = granularity
        self._lock = threading.Lock()
        self._pending: dict[str, datetime] = {}
        self._noted: OrderedDict[str, datetime] = OrderedDict()

    def note(self, device_id: str, now: datetime, *, recorded: datetime | None) -> None:
        """The device was heard from at `now`; `recorded` is the `last_seen_at` its record holds."""
        with self._lock:
            noted = self._noted.get(device_id)
            latest = max((t for t in (recorded, noted) if t is not None), default=None)
            if latest is not None and now - latest <= self._granularity:
                return
            self._pending[device_id] = now
            self._noted[device_id] = now
            self._noted.move_to_end(device_id)
            while len(self._noted) > self._capacity:
                self._noted.popitem(last=False)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self, write: Callable[[dict[str, datetime]], None]) -> int:
        """Hand what was noted to `write` (one batch); on failure it is kept for the next flush. How many."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            write(batch)
        except BaseException:
            with self._lock:
                for device_id, seen in batch.items():
                    if self._pending.get(device_id, seen) <= seen:
                        self._pending[device_id] = seen
            raise
        return len(batch)
