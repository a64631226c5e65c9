"""`Hub`: what every service needs (settings, store, keys, clock), built once per process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from edgefleet.hub.datadir import HubKeys
from edgefleet.hub.db import Store
from edgefleet.hub.notify import Notifier
from edgefleet.hub.settings import HubSettings

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The system clock, as an aware UTC datetime."""
    return datetime.now(UTC)


class RefusalBudget:
    """How many unauthenticated refusals per minute this process writes to the audit log.

    Anyone can send a bad enrollment; without a bound they could grow the (never pruned)
    audit chain and hold the write lock at will. Past the budget, refusals are counted and
    the count goes into the next refusal that is audited.
    """

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._lock = threading.Lock()
        self._window: datetime | None = None
        self._used = 0
        self._skipped = 0

    def take(self, now: datetime) -> int | None:
        """None when over budget (the refusal is only counted); else how many were skipped before it."""
        with self._lock:
            if self._window is None or now - self._window >= timedelta(minutes=1):
                self._window, self._used = now, 0
            if self._used >= self._per_minute:
                self._skipped += 1
                return None
            self._used += 1
            skipped, self._skipped = self._skipped, 0
            return skipped


@dataclass(frozen=True)
class Hub:
    """The running hub's dependencies; services take it as their first argument."""

    settings: HubSettings
    store: Store
    keys: HubKeys
    clock: Clock = utc_now
    refusal_budget: RefusalBudget = field(init=False)

    def __post_init__(self) -> None:
        # Per process, sized by the settings; frozen, so set once here.
        object.__setattr__(self, "refusal_budget", RefusalBudget(self.settings.refusal_audits_per_minute))

    @property
    def notifier(self) -> Notifier:
        """Wakes this process's held device polls: the store's, fed by its commits or its listener."""
        return self.store.notifier
