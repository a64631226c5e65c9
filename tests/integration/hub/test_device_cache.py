"""The device caches across hub processes on one PostgreSQL database: a change in one is seen by the others.

Each hub process keeps device records and target answers (`hub.devicecache`), answers
unchanged requests from them, and drops them when any process commits a change (its own at
once, the others' through the LISTEN/NOTIFY listener). These tests run two hub processes'
apps (each its own store, connections, listener and caches) on one database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from edgefleet.hub.api.app import create_app
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Store
from edgefleet.hub.db.device_path import DevicePathQueries
from edgefleet.hub.db.listen import DeviceListener
from edgefleet.hub.lastseen import LAST_SEEN_GRANULARITY
from tests.conftest import Fleet
from tests.integration.hub.test_device_events import event as device_event
from tests.integration.hub.test_push import assign, caught_up, listener_of, poll, postgres_only
from tests.integration.hub.test_push import publisher as publisher  # a fixture: one release, published
from tests.publishing import Publisher

PROPAGATION_SECONDS = 1.0
"""How long a change may take to reach another process's caches (a NOTIFY; milliseconds in practice)."""


@pytest.fixture
def other(fleet: Fleet, hub: Hub, api: TestClient, tmp_path: Path) -> Iterator[Fleet]:
    """The same fleet seen through a second hub process's app."""
    listener_of(api)
    second = Hub(settings=hub.settings, store=Store(hub.store.url), keys=hub.keys, clock=hub.clock)
    try:
        with TestClient(create_app(second), raise_server_exceptions=False) as second_api:
            listener_of(second_api)
            yield Fleet(api=second_api, hub=second, admin=fleet.admin, clock=fleet.clock, tmp=tmp_path)
    finally:
        second.store.dispose()


def within(seconds: float, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.01)


def statements_of(hub: Hub) -> list[str]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(hub.store.engine, "before_cursor_execute", count)
    return seen


def report(fleet: Fleet, device: Any, **properties: Any) -> Any:
    path = f"/devices/{device.device_id}/twin/reported"
    return fleet.device_call(device, "PATCH", path, json={"properties": properties})


@postgres_only
def test_unchanged_polls_and_reports_are_answered_without_the_database(fleet: Fleet) -> None:
    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    assert report(fleet, device, os="a").status_code == 200
    caught_up(fleet.hub)
    assert poll(fleet, device).status_code == 200  # the report changed the record: read once more
    statements = statements_of(fleet.hub)
    for _ in range(3):
        assert poll(fleet, device, etag).status_code == 304
        assert poll(fleet, device).headers["etag"] == etag
        assert report(fleet, device, os="a").json()["reported"] == {"os": "a"}
    assert [s for s in statements if "last_seen_at" not in s] == []


@postgres_only
def test_a_changed_report_is_one_statement(fleet: Fleet) -> None:
    device = fleet.enroll()
    assert report(fleet, device, os="a").status_code == 200
    caught_up(fleet.hub)
    assert poll(fleet, device).status_code == 200  # the record, cached again after the change
    statements = statements_of(fleet.hub)
    changed = report(fleet, device, os="b", disk_free=7)
    assert changed.json()["reported"] == {"os": "b", "disk_free": 7}
    written = [s for s in statements if "last_seen_at" not in s]
    assert len(written) == 1, written  # token spent, twin compared and set, change announced
    assert "INSERT INTO device_token_uses" in written[0]
    assert "pg_notify" in written[0]
    # Its token is spent: the same token cannot make another change.
    token_reuse = fleet.api.patch(
        f"/api/v1/devices/{device.device_id}/twin/reported",
        headers=changed.request.headers,
        json={"properties": {"os": "c"}},
    )
    assert token_reuse.json()["code"] == "token_replayed"


@postgres_only
def test_a_report_made_from_a_stale_record_is_merged_into_the_current_twin(fleet: Fleet, other: Fleet) -> None:
    """Another process changed the twin a moment ago: the one statement finds it changed, the locked path merges."""
    device = fleet.enroll()
    assert report(fleet, device, os="a").status_code == 200
    assert poll(fleet, device).status_code == 200
    listener_of(fleet.api).stop()  # this process will not hear of the other's change ...
    fleet.hub.caches.use_while(lambda: True)  # ... and trusts its cache all the same: a stale record
    assert report(other, device, disk_free=7).status_code == 200
    assert report(fleet, device, os="b").json()["reported"] == {"os": "b", "disk_free": 7}


@postgres_only
def test_a_revocation_in_one_process_refuses_the_device_in_every_other(fleet: Fleet, other: Fleet) -> None:
    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    assert poll(fleet, device, etag).status_code == 304  # held in this process's caches
    assert other.call("POST", f"/devices/{device.device_id}/revoke").status_code == 200
    assert poll(other, device).json()["code"] == "device_revoked"  # the revoking process: at once
    within(PROPAGATION_SECONDS, lambda: poll(fleet, device, etag).status_code == 403)
    assert report(fleet, device, os="b").json()["code"] == "device_revoked"


@postgres_only
def test_a_report_through_another_process_is_not_undone_by_an_unchanged_looking_one(fleet: Fleet, other: Fleet) -> None:
    """The first process holds the twin as {os: a}; the second changes it to b; a report of a must be written."""
    device = fleet.enroll()
    assert report(fleet, device, os="a").status_code == 200
    caught_up(fleet.hub)  # the report's own notification has come back: it no longer drops what is cached next
    assert poll(fleet, device).status_code == 200  # caches the record with os a
    assert fleet.hub.caches.devices.get(device.device_id) is not None
    assert report(other, device, os="b").json()["reported"] == {"os": "b"}
    within(PROPAGATION_SECONDS, lambda: fleet.hub.caches.devices.get(device.device_id) is None)
    assert report(fleet, device, os="a").json()["reported"] == {"os": "a"}
    assert other.call("GET", f"/devices/{device.device_id}/twin").json()["reported"] == {"os": "a"}


@postgres_only
def test_an_assignment_through_another_process_changes_the_cached_answer(
    fleet: Fleet, other: Fleet, publisher: Publisher
) -> None:
    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    assert poll(fleet, device, etag).status_code == 304
    assert assign(other, device.device_id, "sensor@1.0.0").status_code == 200
    within(PROPAGATION_SECONDS, lambda: poll(fleet, device, etag).status_code == 200)
    assert poll(fleet, device).json()["apps"]["sensor"]["version"] == "1.0.0"


@postgres_only
def test_without_its_listener_a_process_reads_the_database(fleet: Fleet, other: Fleet, api: TestClient) -> None:
    """Changes may go unannounced while the listener is away: the caches are not used then, and cleared after."""
    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    listener: DeviceListener = listener_of(api)
    listener.stop()
    assert not fleet.hub.caches.usable
    statements = statements_of(fleet.hub)
    assert poll(fleet, device, etag).status_code == 304
    assert statements, "read from the database"
    assert other.call("POST", f"/devices/{device.device_id}/revoke").status_code == 200
    assert poll(fleet, device, etag).json()["code"] == "device_revoked"  # at once: nothing cached is trusted


def last_seen(fleet: Fleet, device_id: str) -> Any:
    with fleet.hub.store.transaction(readonly=True) as tx:
        found = tx.get_device(device_id)
    assert found is not None
    return found.last_seen_at


@pytest.fixture
def slow_writer(fleet: Fleet, hub: Hub) -> Iterator[Fleet]:
    """The fleet through a hub process whose last-seen writer waits 30 s (this test flushes by hand)."""
    settings = hub.settings.model_copy(update={"last_seen_flush_seconds": 30})
    slow = Hub(settings=settings, store=Store(hub.store.url), keys=hub.keys, clock=hub.clock)
    try:
        with TestClient(create_app(slow), raise_server_exceptions=False) as slow_api:
            yield Fleet(api=slow_api, hub=slow, admin=fleet.admin, clock=fleet.clock, tmp=fleet.tmp)
    finally:
        slow.store.dispose()


def test_last_seen_is_written_in_batches_and_when_the_process_stops(slow_writer: Fleet) -> None:
    fleet, hub = slow_writer, slow_writer.hub
    devices = [fleet.enroll() for _ in range(3)]
    enrolled_at = {d.device_id: last_seen(fleet, d.device_id) for d in devices}
    fleet.clock.advance(timedelta(minutes=1))
    for device in devices:
        assert poll(fleet, device).status_code == 200
    assert {d.device_id: last_seen(fleet, d.device_id) for d in devices} == enrolled_at  # noted, not yet written
    statements = statements_of(hub)
    assert hub.flush_last_seen() == 3
    assert len([s for s in statements if "last_seen_at" in s]) == 1  # one statement for the batch
    assert {last_seen(fleet, d.device_id) for d in devices} == {fleet.clock()}
    # A device heard from again within LAST_SEEN_GRANULARITY is not written again.
    fleet.clock.advance(LAST_SEEN_GRANULARITY / 2)
    assert poll(fleet, devices[0]).status_code == 200
    assert hub.flush_last_seen() == 0
    # What is noted when the app stops is written then.
    fleet.clock.advance(LAST_SEEN_GRANULARITY * 2)
    with TestClient(create_app(hub), raise_server_exceptions=False) as api:
        other = Fleet(api=api, hub=hub, admin=fleet.admin, clock=fleet.clock, tmp=fleet.tmp)
        assert poll(other, devices[1]).status_code == 200
    assert last_seen(fleet, devices[1].device_id) == fleet.clock()


def test_a_last_seen_time_never_moves_back(fleet: Fleet, hub: Hub) -> None:
    device = fleet.enroll()
    now = fleet.clock()
    with hub.store.transaction() as tx:
        # e.g. a late batch of another process:
        DevicePathQueries(tx).touch({device.device_id: now - timedelta(hours=1)})
    assert last_seen(fleet, device.device_id) == now


def director_targets(fleet: Fleet, device: Any) -> dict[str, Any]:
    """The device's director targets as it fetches them: timestamp, then the targets it names."""
    stamp = fleet.device_call(device, "GET", "/tuf/director/timestamp.json")
    assert stamp.status_code == 200, stamp.text
    response = fleet.device_call(device, "GET", "/tuf/director/targets.json")
    assert response.status_code == 200, response.text
    return dict(response.json()["signed"])


@postgres_only
def test_current_director_metadata_are_not_checked_again_until_the_device_changes(
    fleet: Fleet, other: Fleet, publisher: Publisher
) -> None:
    device = fleet.enroll()
    assert assign(fleet, device.device_id, "sensor@1.0.0").status_code == 200
    first = director_targets(fleet, device)
    caught_up(fleet.hub)
    statements = statements_of(fleet.hub)
    assert fleet.device_call(device, "GET", "/tuf/director/timestamp.json").status_code == 200
    reads = [s for s in statements if "director_metadata" in s or "assignments" in s]
    assert len(reads) == 1, reads  # the timestamp itself; only the root's version looked at (not counted)

    # Another process assigns another release: this one's memory of "current" is dropped.
    assert assign(other, device.device_id, "sensor@1.0.0").status_code == 200  # the same: no change of metadata
    within(PROPAGATION_SECONDS, lambda: fleet.hub.caches.directors.get(device.device_id) is None)
    assert director_targets(fleet, device)["version"] == first["version"]
    other.hub.store.notifier.forget(None)
    with other.hub.store.transaction() as tx:
        tx.delete_assignment(device.device_id, "sensor")
    within(PROPAGATION_SECONDS, lambda: fleet.hub.caches.directors.get(device.device_id) is None)
    emptied = director_targets(fleet, device)
    assert emptied["version"] == first["version"] + 1
    assert emptied["targets"] == {}


@postgres_only
def test_an_update_checks_the_director_metadata_once_and_reads_its_versioned_files_from_memory(
    fleet: Fleet, other: Fleet, publisher: Publisher
) -> None:
    device = fleet.enroll()
    assert assign(fleet, device.device_id, "sensor@1.0.0").status_code == 200
    first = director_targets(fleet, device)
    other.hub.store.notifier.forget(None)
    with other.hub.store.transaction() as tx:  # another process changes what the device is told
        tx.delete_assignment(device.device_id, "sensor")
    within(
        PROPAGATION_SECONDS,
        lambda: fleet.hub.caches.directors.changed(device.device_id),
    )
    statements = statements_of(fleet.hub)
    stamp = fleet.device_call(device, "GET", "/tuf/director/timestamp.json")
    assert stamp.status_code == 200
    checks = [s for s in statements if "FROM assignments" in s]
    assert len(checks) == 1, checks  # checked once, in the transaction that re-signed (no read-only check first)
    snapshot_version = stamp.json()["signed"]["meta"]["snapshot.json"]["version"]
    statements.clear()
    snapshot = fleet.device_call(device, "GET", f"/tuf/director/{snapshot_version}.snapshot.json")
    targets_version = snapshot.json()["signed"]["meta"]["targets.json"]["version"]
    targets = fleet.device_call(device, "GET", f"/tuf/director/{targets_version}.targets.json")
    assert (snapshot.status_code, targets.status_code) == (200, 200)
    assert targets.json()["signed"]["version"] == first["version"] + 1
    assert targets.json()["signed"]["targets"] == {}
    assert not [s for s in statements if "director_metadata" in s], statements  # both from this process's memory
    statements.clear()
    probe = fleet.device_call(device, "GET", "/tuf/director/99.root.json")  # a TUF client asks for the next root
    assert probe.status_code == 404
    assert len(statements) == 2, statements  # that version, and the newest one, kept for the next probe
    statements.clear()
    assert fleet.device_call(device, "GET", "/tuf/director/99.root.json").json() == probe.json()
    assert statements == []
    # What memory answered is what is stored.
    with fleet.hub.store.transaction(readonly=True) as tx:
        assert tx.get_director(device.device_id, "targets", targets_version) == targets.text

    # The other process, which signed none of them, reads them from the database and answers the same.
    assert other.device_call(device, "GET", f"/tuf/director/{targets_version}.targets.json").text == targets.text
    missing = fleet.device_call(device, "GET", f"/tuf/director/{targets_version + 1}.targets.json")
    assert missing.status_code == 404


@postgres_only
def test_director_metadata_remembered_as_current_are_re_signed_when_they_go_stale(
    fleet: Fleet, publisher: Publisher
) -> None:
    device = fleet.enroll()
    first = director_targets(fleet, device)
    held = fleet.hub.caches.directors.get(device.device_id)
    assert held is not None
    fleet.clock.advance(held.until - fleet.clock() + timedelta(seconds=1))
    stamp = fleet.device_call(device, "GET", "/tuf/director/timestamp.json").json()["signed"]
    assert stamp["version"] > 1  # re-signed: the remembered time had passed
    assert director_targets(fleet, device)["version"] == first["version"] + 1


@postgres_only
def test_an_update_outcome_drops_nothing_a_device_is_answered_from(fleet: Fleet, other: Fleet) -> None:
    device = fleet.enroll()
    assert poll(fleet, device).status_code == 200
    assert poll(other, device).status_code == 200
    sent = other.device_call(device, "POST", "/device/events", json={"events": [device_event(1)], "dropped": 0})
    assert sent.status_code == 200, sent.text
    for hub in (fleet.hub, other.hub):
        caught_up(hub)  # the outcome's announcement has reached both processes
        assert hub.caches.devices.get(device.device_id) is not None
        assert hub.caches.targets.get(device.device_id) is not None
    found = fleet.hub.fleet.refresh(fleet.hub.store).targets[device.device_id].outcomes  # the scheduler's view
    assert found["sensor"][0] == "failed"


@postgres_only
def test_an_assignment_drops_the_devices_answer_and_keeps_its_record(
    fleet: Fleet, other: Fleet, publisher: Publisher
) -> None:
    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    assert assign(other, device.device_id, "sensor@1.0.0").status_code == 200
    caught_up(fleet.hub)
    assert fleet.hub.caches.targets.get(device.device_id) is None
    assert fleet.hub.caches.devices.get(device.device_id) is not None
    statements = statements_of(fleet.hub)
    answer = poll(fleet, device, etag)
    assert answer.json()["apps"]["sensor"]["version"] == "1.0.0"
    reads = [s for s in statements if "FROM devices" in s]
    assert len(reads) == 1, reads  # the answer's own look at the device's status; its record was kept
