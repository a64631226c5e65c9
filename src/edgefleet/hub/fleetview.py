"""The rollout scheduler's per-process view of the accepted fleet, refreshed from the devices that changed.

A scheduler pass and a deployment's status need, for every accepted device, its tags, its
architecture, what its twin says it runs and its latest update outcomes. Reading all of
that on every pass costs as much as the fleet is large; this view reads it once and then
only the devices announced as changed since (the same feed that keeps the device caches
true, `Notifier.watch`: every committed change to a device's row or update outcomes names
the device, in this process at once and in the others through PostgreSQL's listener).

- A refresh takes the changed devices *before* it reads them, in a transaction of its own
  begun after that: a change committed later is announced later and read by the next
  refresh, so nothing is missed, at worst read twice.
- The view is rebuilt from the whole fleet when a change to every device is announced
  (a fleet-wide change, or a listener that may have missed some), when more than
  `capacity` devices changed at once, every `full_seconds` whatever happens (a change made
  outside any hub process), and on every refresh while the view may not be used
  (`usable` false: PostgreSQL's listener not listening), when it is not kept.
- Snapshots are immutable: a refresh publishes a new mapping, so readers on other threads
  never see one change half made.
- Which deployment each device follows is cached per set of competing deployments
  (`owners`), and recomputed only for the devices a refresh read again.

What a device reports is kept as a summary (per app: version and health), so the view's
memory is bounded by the fleet's size, not by the size of its twins.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from edgefleet.hub.db import Store, Tx

_HEALTHY_STATES = frozenset({"running"})
OWNER_MAPS = 64
"""Owner maps kept (one per set of competing deployments of an app), least recently used first out."""


@dataclass(frozen=True, slots=True)
class Running:
    """What a device's twin says it runs of one app."""

    version: str
    healthy: bool
    """No service is reported unhealthy, restarting or stopped."""


@dataclass(frozen=True, slots=True)
class Target:
    """What the scheduler knows of one accepted device."""

    id: str
    tags: Mapping[str, str]
    """Its own tags, and its fleet as ``fleet`` (what a selector sees)."""
    arch: str
    running: Mapping[str, Running]
    outcomes: Mapping[str, tuple[str, str]]
    """App -> (status, to_release) of its latest update outcome."""


def tags_of(fleet: str, tags: Mapping[str, str]) -> dict[str, str]:
    """The tags a selector sees: the device's own, and its fleet as ``fleet``."""
    return {**tags, "fleet": fleet}


def service_healthy(service: object) -> bool:
    """A service as a device reports it is running and not unhealthy (anything malformed is not)."""
    if not isinstance(service, dict):
        return False
    return service.get("state") in _HEALTHY_STATES and service.get("health") != "unhealthy"


def running_of(reported: Mapping[str, Any]) -> dict[str, Running]:
    """Per app, the version a twin reports and whether all its services are healthy (malformed entries skipped)."""
    apps = reported.get("apps")
    if not isinstance(apps, dict):
        return {}
    running = {}
    for app, entry in apps.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("version"), str):
            continue
        services = entry.get("services")
        unhealthy = isinstance(services, dict) and any(not service_healthy(s) for s in services.values())
        running[app] = Running(version=entry["version"], healthy=not unhealthy)
    return running


def read_targets(tx: Tx, device_ids: Iterable[str] | None) -> tuple[dict[str, Target], set[str]]:
    """The accepted devices among `device_ids` (None: the whole fleet), and the ids read that are not accepted."""
    rows = tx.fleet_devices(None if device_ids is None else list(device_ids))
    outcomes: dict[str, dict[str, tuple[str, str]]] = {}
    for device_id, app, status, to_release in tx.fleet_outcomes([r[0] for r in rows if r[4] == "accepted"]):
        outcomes.setdefault(device_id, {})[app] = (status, to_release)
    found, gone = {}, set()
    for device_id, fleet, tags, arch, status, reported in rows:
        if status != "accepted":
            gone.add(device_id)
            continue
        found[device_id] = Target(
            id=device_id,
            tags=tags_of(fleet, tags),
            arch=arch,
            running=running_of(reported),
            outcomes=outcomes.get(device_id, {}),
        )
    return found, gone


Chooser = Callable[[Target], str | None]
"""Which deployment (its id) a device follows among one set of competing deployments, or None."""


@dataclass(frozen=True, slots=True)
class Owners:
    """One set of competing deployments: who follows which."""

    of_device: Mapping[str, str]
    by_deployment: Mapping[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The accepted fleet as one refresh left it; `generation` grows with every refresh that read something."""

    generation: int
    targets: Mapping[str, Target]


class FleetView:
    """One hub process's view of the accepted fleet (see the module's docstring)."""

    def __init__(
        self,
        *,
        capacity: int,
        full_seconds: float,
        usable: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = capacity
        self._full_seconds = full_seconds
        self._usable = usable
        self._clock = clock
        self._lock = threading.Lock()
        """Guards the announced changes."""
        self._refreshing = threading.Lock()
        """One refresh at a time, and what it publishes."""
        self._dirty: set[str] = set()
        self._stale = True
        self._loaded_at = float("-inf")
        self._snapshot = Snapshot(0, MappingProxyType({}))
        self._owners: OrderedDict[Hashable, tuple[Chooser, Owners]] = OrderedDict()
        self.reads = 0
        """Devices read from the database so far (for tests and benchmarks: the cost of keeping the view)."""
        self.full_reads = 0

    def changed(self, device_ids: Iterable[str] | None) -> None:
        """These devices changed (None: any may have): read them again at the next refresh."""
        with self._lock:
            if device_ids is None:
                self._stale = True
                self._dirty.clear()
                return
            self._dirty.update(device_ids)
            if len(self._dirty) > self._capacity:
                self._stale = True
                self._dirty.clear()

    def refresh(self, store: Store) -> Snapshot:
        """The accepted fleet, as of a transaction begun now (read in full or only what changed)."""
        with self._refreshing:
            with self._lock:
                dirty, self._dirty = self._dirty, set()
                stale, self._stale = self._stale, False
            usable = self._usable()
            full = stale or not usable or self._clock() - self._loaded_at > self._full_seconds
            if not full and not dirty:
                return self._snapshot
            with store.transaction(readonly=True) as tx:
                found, gone = read_targets(tx, None if full else sorted(dirty))
            self.reads += len(found) + len(gone)
            if not full and not found and not gone:
                return self._snapshot  # announced, but nothing the view holds (e.g. a device not accepted)
            if full:
                self.full_reads += 1
                targets = found
                self._owners.clear()
                if usable:
                    self._loaded_at = self._clock()
                else:
                    with self._lock:
                        self._stale = True  # not kept: changes may go unannounced meanwhile
            else:
                targets = dict(self._snapshot.targets)
                for device_id in gone:
                    targets.pop(device_id, None)
                targets.update(found)
                for key, (chooser, owners) in self._owners.items():
                    self._owners[key] = (chooser, _rechosen(owners, chooser, targets, set(found) | gone))
            self._snapshot = Snapshot(self._snapshot.generation + 1, MappingProxyType(targets))
            return self._snapshot

    def owners(self, key: Hashable, chooser: Chooser, snapshot: Snapshot) -> Owners:
        """Who follows which deployment among one competing set (`key` names the set; `chooser` decides).

        Computed for every device of `snapshot` the first time, then kept up to date by refreshes.
        """
        with self._refreshing:
            current = snapshot is self._snapshot
            held = self._owners.get(key)
            if held is not None and current:
                self._owners.move_to_end(key)
                return held[1]
            owners = _rechosen(Owners({}, {}), chooser, snapshot.targets, set(snapshot.targets))
            if current:
                self._owners[key] = (chooser, owners)
                while len(self._owners) > OWNER_MAPS:
                    self._owners.popitem(last=False)
            return owners


def _rechosen(owners: Owners, chooser: Chooser, targets: Mapping[str, Target], device_ids: set[str]) -> Owners:
    """`owners` with the choice made again for `device_ids` (those no longer in `targets` follow nothing).

    Copies the device map, and the member sets of the deployments whose devices moved only.
    """
    of_device = dict(owners.of_device)
    moved: dict[str, set[str]] = {}

    def members(deployment_id: str) -> set[str]:
        if deployment_id not in moved:
            moved[deployment_id] = set(owners.by_deployment.get(deployment_id, ()))
        return moved[deployment_id]

    for device_id in device_ids:
        before = of_device.pop(device_id, None)
        target = targets.get(device_id)
        chosen = None if target is None else chooser(target)
        if chosen == before:
            if chosen is not None:
                of_device[device_id] = chosen
            continue
        if before is not None:
            members(before).discard(device_id)
        if chosen is not None:
            of_device[device_id] = chosen
            members(chosen).add(device_id)
    by_deployment = {**owners.by_deployment, **{key: frozenset(ids) for key, ids in moved.items()}}
    return Owners(of_device=MappingProxyType(of_device), by_deployment=MappingProxyType(by_deployment))
