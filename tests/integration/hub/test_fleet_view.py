"""The scheduler's fleet view on each database: a pass and a status read only what changed, across processes too.

`hub.fleetview` keeps the accepted fleet per process and reads again only the devices
announced as changed. These tests count what it reads (`FleetView.reads`, `full_reads`), so
they fail if a pass or a status goes back to reading every device, or if a change is missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from edgefleet.hub.context import STATUS_SECONDS, Hub
from edgefleet.hub.fleetview import FleetView
from edgefleet.hub.records import UpdateOutcome
from edgefleet.hub.services import deployments
from edgefleet.hub.services.operators import Operator
from tests.conftest import Fleet
from tests.integration.hub.test_deployments import add_devices, deploy, report, status, tick
from tests.integration.hub.test_deployments import publisher as publisher  # a fixture: 1.0.0 and 2.0.0
from tests.integration.hub.test_device_cache import PROPAGATION_SECONDS, within
from tests.integration.hub.test_device_cache import other as other  # a fixture: a second hub process
from tests.integration.hub.test_push import caught_up, listener_of, postgres_only

pytestmark = pytest.mark.integration


def settled(fleet: Fleet) -> FleetView:
    """The hub's fleet view once its listener listens (on PostgreSQL: before, the view is not kept), read in full."""
    if fleet.hub.store.dialect == "postgresql":
        listener_of(fleet.api)
    caught_up(fleet.hub)
    fleet.hub.fleet.refresh(fleet.hub.store)  # the listener's first wake asks for a full read: let it happen now
    return fleet.hub.fleet


def refreshed(fleet: Fleet) -> tuple[int, int]:
    """Refresh the view as a pass would; (devices read, full reads) it cost."""
    caught_up(fleet.hub)
    view = fleet.hub.fleet
    before = (view.reads, view.full_reads)
    view.refresh(fleet.hub.store)
    return view.reads - before[0], view.full_reads - before[1]


def rollout_pass(fleet: Fleet) -> tuple[int, int]:
    """Run a pass once every change so far has been announced; (devices read, full reads) it cost the view.

    On PostgreSQL a process hears its own changes twice: at its commit, and from its listener.
    """
    caught_up(fleet.hub)
    view = fleet.hub.fleet
    before = (view.reads, view.full_reads)
    tick(fleet)
    return view.reads - before[0], view.full_reads - before[1]


def test_a_pass_reads_only_the_devices_that_changed(fleet: Fleet, publisher: object) -> None:
    devices = add_devices(fleet, 40)
    assert deploy(fleet, name="v1", waves="10%,100%", bake_seconds=3600).status_code == 201
    settled(fleet)
    rollout_pass(fleet)  # the devices the first wave assigned were announced: read once more
    assert rollout_pass(fleet) == (0, 0)  # nothing changed: nothing read

    report(fleet, devices[:3], "2.0.0")  # twins and outcomes of three devices
    assert rollout_pass(fleet) == (3, 0)
    assert rollout_pass(fleet) == (0, 0)

    add_devices(fleet, 2)  # newcomers are announced too
    assert rollout_pass(fleet) == (2, 0)
    rollout_pass(fleet)  # (those it assigned at once, as their place in the order is reached, again)
    with fleet.hub.store.transaction() as tx:
        tx.update_device(devices[5], tags={"env": "dev"})
    assert rollout_pass(fleet) == (1, 0)
    assert status(fleet, "v1")["targeted"] == 41  # 40 + 2 - the one retagged away


def test_what_a_pass_reads_again_is_what_it_judges(fleet: Fleet, publisher: object) -> None:
    devices = add_devices(fleet, 10)
    assert deploy(fleet, name="v2", waves="100%", max_failure="50%").status_code == 201
    settled(fleet)
    rollout_pass(fleet)
    report(fleet, devices[:9], "2.0.0")
    report(fleet, devices[9:], "2.0.0", status="failed")
    rollout_pass(fleet)
    waves = status(fleet, "v2")["waves"]
    assert (waves[0]["updated"], waves[0]["failed"]) == (9, 1)
    assert status(fleet, "v2")["deployment"]["state"] == "completed"
    # Retagged away and back: the device leaves and rejoins, read each time.
    with fleet.hub.store.transaction() as tx:
        tx.update_device(devices[0], tags={"env": "dev"})
    rollout_pass(fleet)
    assert status(fleet, "v2")["left"] == 1
    with fleet.hub.store.transaction() as tx:
        tx.update_device(devices[0], tags={"env": "prod"})
    rollout_pass(fleet)
    assert status(fleet, "v2")["left"] == 0


def test_a_fleet_wide_change_or_too_many_changes_read_everything(fleet: Fleet, publisher: object) -> None:
    devices = add_devices(fleet, 12)
    view = settled(fleet)
    assert refreshed(fleet) == (0, 0)
    fleet.hub.notifier.forget(None)  # what a listener that reconnected announces
    assert refreshed(fleet) == (12, 1)
    small = FleetView(capacity=3, full_seconds=600, usable=lambda: True)
    small.refresh(fleet.hub.store)
    small.changed(devices[:3])
    assert small.refresh(fleet.hub.store).generation == 2
    assert small.full_reads == 1
    small.changed(devices[:4])  # more than it keeps track of
    small.refresh(fleet.hub.store)
    assert small.full_reads == 2
    assert view.full_reads >= 1


def test_a_view_that_may_miss_changes_is_not_kept(fleet: Fleet, publisher: object) -> None:
    add_devices(fleet, 5)
    view = FleetView(capacity=100, full_seconds=600, usable=lambda: False)
    view.refresh(fleet.hub.store)
    view.refresh(fleet.hub.store)
    assert (view.reads, view.full_reads) == (10, 2)
    now = [0.0]
    aging = FleetView(capacity=100, full_seconds=600, usable=lambda: True, clock=lambda: now[0])
    aging.refresh(fleet.hub.store)
    aging.refresh(fleet.hub.store)  # young and nothing announced: nothing read
    assert aging.full_reads == 1
    now[0] = 601.0
    aging.refresh(fleet.hub.store)  # older than full_seconds: read in full whatever was announced
    assert aging.full_reads == 2


def test_status_is_shared_until_something_changes(fleet: Fleet, publisher: object) -> None:
    devices = add_devices(fleet, 10)
    assert deploy(fleet, name="v3", waves="100%").status_code == 201
    settled(fleet)
    admin = Operator(user="admin", role="admin", token_id="test")
    first = deployments.status(fleet.hub, admin, "v3")
    assert deployments.status(fleet.hub, admin, "v3") is first  # every viewer in the same second: one computation
    fleet.hub.notifier.forget(["not-a-device"])  # announced, but nothing the view holds changes
    assert deployments.status(fleet.hub, admin, "v3") is first
    report(fleet, devices[:1], "2.0.0")  # the fleet view changes: computed again
    second = deployments.status(fleet.hub, admin, "v3")
    assert second is not first
    tick(fleet)  # a pass that acts on it (the device updated) drops it at once
    third = deployments.status(fleet.hub, admin, "v3")
    assert third is not second
    assert third.waves[0][1].updated == 1


def test_live_views_share_a_status_while_devices_change(fleet: Fleet, publisher: object) -> None:
    devices = add_devices(fleet, 10)
    assert deploy(fleet, name="v5", waves="100%").status_code == 201
    settled(fleet)
    admin = Operator(user="admin", role="admin", token_id="test")
    first = deployments.status(fleet.hub, admin, "v5", max_age=STATUS_SECONDS)
    report(fleet, devices[:1], "2.0.0")  # the fleet view changes, as it does all through a rollout
    assert deployments.status(fleet.hub, admin, "v5", max_age=STATUS_SECONDS) is first  # a live view shares it
    now = deployments.status(fleet.hub, admin, "v5")  # a plain `deploy status`: as of now
    assert now is not first
    assert deployments.status(fleet.hub, admin, "v5", max_age=STATUS_SECONDS) is now  # the newest is shared next
    report(fleet, devices[1:2], "2.0.0")
    time.sleep(0.05)
    assert deployments.status(fleet.hub, admin, "v5", max_age=0.01) is not now  # older than this viewer takes
    answer = fleet.call("GET", "/deployments/v5", params={"max_age": 61})
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request")
    tick(fleet)  # a pass that acts on it drops it, live views or not
    assert deployments.status(fleet.hub, admin, "v5", max_age=STATUS_SECONDS).waves[0][1].updated == 2


def pass_statements(hub: Hub, run: Callable[[], None]) -> int:
    from tests.integration.hub.test_device_cache import statements_of

    caught_up(hub)
    statements = statements_of(hub)
    run()
    return len(statements)


def test_a_pass_costs_the_same_statements_whatever_the_fleet(fleet: Fleet, publisher: object) -> None:
    add_devices(fleet, 5)
    assert deploy(fleet, name="v4", waves="100%").status_code == 201
    settled(fleet)
    rollout_pass(fleet)
    small = pass_statements(fleet.hub, lambda: tick(fleet))
    add_devices(fleet, 300, tags={"env": "dev"})  # not targeted, but accepted: the old pass read them all
    rollout_pass(fleet)
    assert pass_statements(fleet.hub, lambda: tick(fleet)) == small


@postgres_only
def test_a_change_through_another_process_reaches_this_view(fleet: Fleet, other: Fleet, api: TestClient) -> None:
    devices = add_devices(fleet, 6)
    view = settled(fleet)
    listener_of(other.api)
    assert refreshed(fleet) == (0, 0)
    reads = view.reads
    with other.hub.store.transaction() as tx:  # committed by the other process only
        tx.put_update_outcome(
            UpdateOutcome(
                device_id=devices[0],
                app="sensor",
                seq=1,
                at=fleet.clock(),
                status="failed",
                from_release="1.0.0",
                to_release="2.0.0",
                service=None,
                reason=None,
                logs=None,
            )
        )
        tx.update_device(devices[1], tags={"env": "dev"})

    def heard() -> bool:
        targets = view.refresh(fleet.hub.store).targets
        return "sensor" in targets[devices[0]].outcomes and targets[devices[1]].tags["env"] == "dev"

    within(PROPAGATION_SECONDS, heard)
    assert view.full_reads == 1
    assert view.reads - reads == 2
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:  # nothing else arrives
        view.refresh(fleet.hub.store)
    assert view.reads - reads == 2
