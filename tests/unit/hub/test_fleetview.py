"""The fleet view's bookkeeping against an in-memory registry: whatever the changes, refreshed equals read afresh.

The same behaviour against PostgreSQL and SQLite, across processes, is in
tests/integration/hub/test_fleet_view.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.hub.db import Store
from edgefleet.hub.fleetview import FleetView, Target, running_of

DEVICES = [f"d{i}" for i in range(12)]


class Registry:
    """Devices as rows: (fleet, tags, arch, status, reported), and outcomes per device and app."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, dict[str, str], str, str, dict[str, Any]]] = {}
        self.outcomes: dict[str, dict[str, tuple[str, str]]] = {}

    def fleet_devices(
        self, ids: Sequence[str] | None
    ) -> list[tuple[str, str, dict[str, str], str, str, dict[str, Any]]]:
        chosen = sorted(self.rows) if ids is None else [i for i in ids if i in self.rows]
        found = [(i, *self.rows[i]) for i in chosen]
        return [row for row in found if ids is not None or row[4] == "accepted"]

    def fleet_outcomes(self, ids: Sequence[str]) -> list[tuple[str, str, str, str]]:
        return [(i, app, *o) for i in ids for app, o in self.outcomes.get(i, {}).items()]

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Registry]:
        yield self


def chooser(target: Target) -> str | None:
    """Two competing deployments: `a` takes site=1, `b` every arm64 device it leaves."""
    if target.tags.get("site") == "1":
        return "a"
    return "b" if target.arch == "arm64" else None


change = st.tuples(
    st.sampled_from(DEVICES),
    st.sampled_from(["accepted", "accepted", "revoked"]),
    st.sampled_from(["0", "1"]),
    st.sampled_from(["arm64", "amd64"]),
    st.sampled_from(["1.0.0", "2.0.0"]),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(rounds=st.lists(st.lists(change, max_size=6), min_size=1, max_size=6))
def test_refreshed_from_announced_changes_equals_a_fresh_read(rounds: list[list[tuple[Any, ...]]]) -> None:
    registry = Registry()
    store = cast(Store, registry)
    view = FleetView(capacity=1000, full_seconds=600, usable=lambda: True, clock=lambda: 0.0)
    view.refresh(store)
    for batch in rounds:
        for device_id, status, site, arch, version, failed in batch:
            registry.rows[device_id] = ("f", {"site": site}, arch, status, {"apps": {"s": {"version": version}}})
            if failed:
                registry.outcomes[device_id] = {"s": ("failed", version)}
        view.changed(device_id for device_id, *_ in batch)
        snapshot = view.refresh(store)
        owners = view.owners("key", chooser, snapshot)
        fresh = FleetView(capacity=1000, full_seconds=600, usable=lambda: True, clock=lambda: 0.0).refresh(store)
        assert dict(snapshot.targets) == dict(fresh.targets)
        expected = {d: c for d, t in fresh.targets.items() if (c := chooser(t)) is not None}
        assert dict(owners.of_device) == expected
        assert {k: set(v) for k, v in owners.by_deployment.items() if v} == {
            k: {d for d, c in expected.items() if c == k} for k in set(expected.values())
        }
    assert view.full_reads == 1  # every refresh after the first read only what was announced


def test_a_summary_of_the_twin_keeps_only_version_and_health() -> None:
    reported = {
        "apps": {
            "ok": {"version": "1", "services": {"web": {"state": "running", "health": "healthy"}}},
            "sick": {"version": "2", "services": {"web": {"state": "running", "health": "unhealthy"}}},
            "down": {"version": "3", "services": {"web": {"state": "exited"}}},
            "bare": {"version": "4"},
            "broken": {"version": 5},
            "junk": "x",
        },
        "uptime": 7,
    }
    running = running_of(reported)
    assert {app: (r.version, r.healthy) for app, r in running.items()} == {
        "ok": ("1", True),
        "sick": ("2", False),
        "down": ("3", False),
        "bare": ("4", True),
    }
    assert running_of({"apps": []}) == {}
