"""Per-process caches on the device path: device records and target answers, bounded, expiring, invalidated on change.

A device's requests (its held poll, its 304s, its unchanged state reports) are answered from
these without a database round trip. They are only as good as their invalidation, so:

- Every committed change to what they hold names its device (`Tx.changed`): the committing
  process drops those entries right after its commit (`Store.transaction`), and on
  PostgreSQL every other hub process drops them when its `DeviceListener` hears the
  ``pg_notify`` the transaction sent. A fleet-wide change drops everything.
- On PostgreSQL they are used only while that listener is listening: a process that may
  be missing notifications reads the database, as if it had no cache, and clears them all
  when it listens again.
- A read that began before an invalidation of its device is not stored: `ticket` before
  the read, `put` after it; a change committed in between would otherwise be cached stale.
- Entries expire after `ttl` seconds whatever happens (a change made outside any hub
  process, e.g. by hand in the database, is seen within that time), and there are at most
  `capacity` of them, least recently used first out.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from edgefleet.crypto import PublicKey
from edgefleet.hub.records import Device
from edgefleet.protocol import TargetState

Value = TypeVar("Value")


class Expiring(Generic[Value]):
    """A bounded, expiring map whose invalidations also stop reads already under way from being stored."""

    def __init__(self, *, capacity: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = capacity
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Value]] = OrderedDict()
        self._generation = 0
        """Counts invalidations; a ticket is the generation a read began at."""
        self._dropped: OrderedDict[str, int] = OrderedDict()
        """Per key, the generation of its latest invalidation (bounded like the entries)."""
        self._floor = 0
        """Reads that began before this generation are not stored (a clear, or a forgotten drop)."""
        self._changed: OrderedDict[str, None] = OrderedDict()
        """Keys invalidated and not stored since (bounded like the entries): a change of them is known."""

    def ticket(self) -> int:
        """Take before reading what will be `put`."""
        with self._lock:
            return self._generation

    def get(self, key: str) -> Value | None:
        """The fresh value, if held."""
        with self._lock:
            held = self._entries.get(key)
            if held is None:
                return None
            stored_at, value = held
            if self._clock() - stored_at > self._ttl:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: Value, ticket: int) -> None:
        """Hold `value`, unless `key` (or everything) was invalidated since `ticket` was taken."""
        with self._lock:
            if ticket < self._floor or self._dropped.get(key, -1) > ticket:
                return
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            self._changed.pop(key, None)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def changed(self, key: str) -> bool:
        """Whether `key` was invalidated and not stored since: a change of it is known.

        False when nothing is known: no invalidation of it among the latest `capacity`, or a
        `clear` since. A hint for work that may be skipped, never a reason to trust a value.
        """
        with self._lock:
            return key in self._changed

    def invalidate(self, keys: Iterable[str]) -> None:
        """Drop these keys; reads of them under way are not stored."""
        with self._lock:
            self._generation += 1
            for key in keys:
                self._entries.pop(key, None)
                self._dropped[key] = self._generation
                self._dropped.move_to_end(key)
                self._changed[key] = None
                self._changed.move_to_end(key)
            while len(self._dropped) > self._capacity:
                _, generation = self._dropped.popitem(last=False)
                self._floor = max(self._floor, generation)
            while len(self._changed) > self._capacity:
                self._changed.popitem(last=False)

    def clear(self) -> None:
        """Drop everything; no read under way is stored."""
        with self._lock:
            self._generation += 1
            self._floor = self._generation
            self._entries.clear()
            self._dropped.clear()
            self._changed.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


@dataclass(frozen=True, slots=True)
class Currency:
    """A device's director metadata need no re-signing until `until`, while the director root is `root_version`."""

    until: datetime
    root_version: int


@dataclass(frozen=True, slots=True)
class KnownDevice:
    """A device's record and its public key, parsed once (None: the stored key does not parse)."""

    record: Device
    key: PublicKey | None


class DeviceCaches:
    """One hub process's caches of device records and target answers, and when they may be used."""

    def __init__(self, *, capacity: int, ttl: float, usable: Callable[[], bool] = lambda: True) -> None:
        self.devices: Expiring[KnownDevice] = Expiring(capacity=capacity, ttl=ttl)
        self.targets: Expiring[TargetState] = Expiring(capacity=capacity, ttl=ttl)
        self.directors: Expiring[Currency] = Expiring(capacity=capacity, ttl=ttl)
        """Until when a device's director metadata are current, and under which root (`services.director.refresh`)."""
        self._usable = usable

    @property
    def usable(self) -> bool:
        """False while changes may go unannounced (PostgreSQL's listener not listening): read the database."""
        return self._usable()

    def use_while(self, usable: Callable[[], bool]) -> None:
        """Set what says the caches may be used (the listener's state); set once the listener exists."""
        self._usable = usable

    def changed(self, device_ids: Iterable[str] | None) -> None:
        """These devices changed (None: any may have): drop what is held of them."""
        if device_ids is None:
            self.devices.clear()
            self.targets.clear()
            self.directors.clear()
            return
        ids = list(device_ids)
        self.devices.invalidate(ids)
        self.targets.invalidate(ids)
        self.directors.invalidate(ids)

    def answers_changed(self, device_ids: Iterable[str] | None) -> None:
        """What these devices are told changed, not their records: drop their answers, keep the records."""
        if device_ids is None:
            self.changed(None)
            return
        ids = list(device_ids)
        self.targets.invalidate(ids)
        self.directors.invalidate(ids)
