"""`Hub`: what every service needs (settings, store, keys, clock), built once per process."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from edgefleet.hub.datadir import HubKeys
from edgefleet.hub.db import Store
from edgefleet.hub.db.device_path import DevicePathQueries
from edgefleet.hub.db.listen import DeviceListener
from edgefleet.hub.devicecache import DeviceCaches, Expiring
from edgefleet.hub.fleetview import FleetView
from edgefleet.hub.lastseen import LastSeen
from edgefleet.hub.notify import Notifier
from edgefleet.hub.settings import HubSettings

Clock = Callable[[], datetime]
FLEET_FULL_SECONDS = 600.0
"""The fleet view is read in full at least this often, whatever was announced."""
STATUS_SECONDS = 1.0
"""A deployment's status is shared by every viewer for this long (the dashboard and `deploy status --watch`)."""
STATUS_ENTRIES = 1000
REPOSITORY_FILES = 64
"""Versioned image-repository files kept per process (each at most `metadata.KEPT_FILE_BYTES`: 64 MiB in all)."""
REPOSITORY_FILE_SECONDS = 3600.0
DIRECTOR_FILES = 3072
"""Devices' versioned director files kept per process (each at most `director.KEPT_FILE_BYTES`: 48 MiB in all)."""
DIRECTOR_FILE_SECONDS = 120.0
"""Long enough for the requests of one update: the timestamp is signed or read, its snapshot and targets follow."""
REPOSITORY_HEADS = 8
"""Entries of `Hub.repository_heads`: the newest version of a few roles (`services.metadata.HEADS`)."""
ARTIFACT_BODIES = 256
"""Small artifacts kept per process (each at most `api.tuflane.KEPT_ARTIFACT_BYTES`: 16 MiB in all)."""


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
    caches: DeviceCaches = field(init=False)
    """This process's device records and target answers (see `hub.devicecache`)."""
    last_seen: LastSeen = field(init=False)
    """Devices heard from, written in batches by the API app (see `hub.lastseen`)."""
    fleet: FleetView = field(init=False)
    """The accepted fleet as the rollout scheduler sees it (see `hub.fleetview`)."""
    repository_files: Expiring[bytes] = field(init=False)
    """The image repository's versioned files (they never change), per process."""
    director_files: Expiring[bytes] = field(init=False)
    """Devices' versioned director files (they never change), per process, for the requests of an update."""
    statuses: Expiring[Any] = field(init=False)
    """Deployment id -> its status (`deployments.SharedStatus`), shared for `STATUS_SECONDS` by every viewer."""
    artifact_bodies: Expiring[Any] = field(init=False)
    """Small artifacts (releases' manifests) as answered, by path: stored by digest, never changed or removed."""
    repository_heads: Expiring[Any] = field(init=False)
    """The newest stored version of the roots and the image repository's timestamp, per process; forgotten
    whenever any process stores metadata (`notify.METADATA_CHANGED`), used like the device caches."""
    fetches: LastSeen = field(init=False)
    """Devices that fetched new director targets, written in batches every `fetch_flush_seconds` (`flush_fetches`)."""

    def __post_init__(self) -> None:
        # Per process, sized by the settings; frozen, so set once here.
        settings = self.settings
        object.__setattr__(self, "refusal_budget", RefusalBudget(settings.refusal_audits_per_minute))
        caches = DeviceCaches(
            capacity=settings.device_cache_entries,
            ttl=settings.device_cache_seconds,
            # On PostgreSQL only once a listener hears every process's changes (`DeviceCaches.use_while`).
            usable=(lambda: settings.device_cache_seconds > 0) if self.store.dialect != "postgresql" else lambda: False,
        )
        self.store.notifier.watch(caches.changed)
        self.store.notifier.watch_answers(caches.answers_changed)
        object.__setattr__(self, "caches", caches)
        fleet = FleetView(
            capacity=settings.device_cache_entries, full_seconds=FLEET_FULL_SECONDS, usable=lambda: caches.usable
        )
        self.store.notifier.watch_outcomes(fleet.changed)
        object.__setattr__(self, "fleet", fleet)
        object.__setattr__(self, "statuses", Expiring(capacity=STATUS_ENTRIES, ttl=STATUS_SECONDS))
        files = Expiring[bytes](capacity=REPOSITORY_FILES, ttl=REPOSITORY_FILE_SECONDS)
        object.__setattr__(self, "repository_files", files)
        object.__setattr__(self, "director_files", Expiring[bytes](capacity=DIRECTOR_FILES, ttl=DIRECTOR_FILE_SECONDS))
        object.__setattr__(self, "last_seen", LastSeen(capacity=settings.device_cache_entries))
        object.__setattr__(self, "artifact_bodies", Expiring[Any](capacity=ARTIFACT_BODIES, ttl=math.inf))
        heads = Expiring[Any](capacity=REPOSITORY_HEADS, ttl=settings.device_cache_seconds)
        self.store.notifier.watch_metadata(heads.clear)
        object.__setattr__(self, "repository_heads", heads)
        # Every fetch is noted (no granularity): the batch holds each device's latest.
        object.__setattr__(self, "fetches", LastSeen(capacity=settings.device_cache_entries, granularity=timedelta(0)))

    def flush_last_seen(self) -> int:
        """Write the devices heard from since the last flush, in one transaction; how many."""

        def write(seen: dict[str, datetime]) -> None:
            with self.store.transaction() as tx:
                DevicePathQueries(tx).touch(seen)

        return self.last_seen.flush(write)

    def flush_fetches(self) -> int:
        """Mark deployment members whose devices fetched new director targets since the last flush; how many devices.

        A member assigned after its device's fetch was noted is left alone: that fetch was of
        the targets before its assignment.
        """

        def write(fetched: dict[str, datetime]) -> None:
            with self.store.transaction() as tx:
                tx.mark_fetched(fetched)

        return self.fetches.flush(write)

    @property
    def notifier(self) -> Notifier:
        """Wakes this process's held device polls: the store's, fed by its commits or its listener."""
        return self.store.notifier

    def listen(self) -> DeviceListener | None:
        """On PostgreSQL, start hearing every hub process's committed changes; stop the listener returned.

        Until it hears them, and whenever it stops, this process's caches and fleet view are not
        used (`DeviceCaches.use_while`): they read the database. Every process that answers
        from them or runs the scheduler needs one. None on SQLite, where this process is the only one.
        """
        listener = self.store.listener()
        if listener is not None:
            settings = self.settings
            self.caches.use_while(lambda: settings.device_cache_seconds > 0 and listener.listening.is_set())
            listener.start()
        return listener
