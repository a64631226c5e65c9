"""The device's target-state long-poll and the director's signed environment, on each database backend."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata

from edgefleet.agent.identity import LocalIdentity
from edgefleet.hub.records import AssignedBy, Assignment
from tests.conftest import Fleet
from tests.publishing import Device, Publisher, assign

pytestmark = pytest.mark.integration


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("sensor", "1.0.0")
    return publisher


def poll(fleet: Fleet, device: LocalIdentity, etag: str | None = None, **params: Any) -> Any:
    headers = {"If-None-Match": etag} if etag else {}
    return fleet.device_call(device, "GET", "/device/target", params=params, headers=headers)


def held(fleet: Fleet, device: LocalIdentity, etag: str, wait: float) -> tuple[threading.Thread, list[Any]]:
    """A poll held by the hub in a thread of its own; its answer lands in the list."""
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(poll(fleet, device, etag, wait=wait)))
    thread.start()
    time.sleep(0.3)  # let the hub start holding it
    return thread, answers


def released(thread: threading.Thread, answers: list[Any], since: float) -> Any:
    thread.join(timeout=10)
    assert answers, "the held poll never returned"
    assert time.monotonic() - since < 3, "a change must release a held poll within a re-read or two"
    return answers[0]


def test_target_state_lists_assignments_and_environment_with_an_etag(fleet: Fleet, publisher: Publisher) -> None:
    device = fleet.enroll()
    empty = poll(fleet, device)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"device_id": device.device_id, "apps": {}, "environment": {}}
    assert empty.headers["etag"].startswith('"')

    assert assign(fleet, device.device_id, "sensor@1.0.0").status_code == 200
    assert fleet.call("PUT", "/fleets/f1/environment/MODE", json={"value": "eco"}).status_code == 200
    answer = poll(fleet, device, empty.headers["etag"])
    assert answer.status_code == 200
    assert answer.json() == {
        "device_id": device.device_id,
        "apps": {"sensor": {"version": "1.0.0", "release_counter": 1, "rollback": False, "retry": 0}},
        "environment": {"MODE": "eco"},
    }
    assert answer.headers["etag"] != empty.headers["etag"]
    assert poll(fleet, device).headers["etag"] == answer.headers["etag"]  # stable while nothing changes


def test_unchanged_target_answers_304_after_the_wait_and_costs_little(fleet: Fleet) -> None:
    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    started = time.monotonic()
    unchanged = poll(fleet, device, etag, wait=1)
    assert unchanged.status_code == 304
    assert 0.9 <= time.monotonic() - started < 5
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == etag

    request = unchanged.request
    request_bytes = len(f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n") + sum(
        len(name) + len(value) + 4 for name, value in request.headers.raw
    )
    response_bytes = len("HTTP/1.1 304 Not Modified\r\n\r\n") + sum(
        len(name) + len(value) + 4 for name, value in unchanged.headers.raw
    )
    # A real server adds a Date and a Server header (about 60 bytes) and TLS framing; still far below.
    assert response_bytes + len(unchanged.content) < 256, unchanged.headers
    assert request_bytes + response_bytes < 1024, (request_bytes, response_bytes)

    immediately = poll(fleet, device, etag)  # no wait: answered at once
    assert immediately.status_code == 304
    assert poll(fleet, device, '"other"', wait=5).status_code == 200  # another ETag: the answer, at once


def test_an_assignment_during_a_held_poll_releases_it_promptly(fleet: Fleet, publisher: Publisher) -> None:
    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    thread, answers = held(fleet, device, etag, wait=20)
    changed_at = time.monotonic()
    assert assign(fleet, device.device_id, "sensor@1.0.0").status_code == 200
    answer = released(thread, answers, changed_at)
    assert answer.status_code == 200
    assert answer.json()["apps"]["sensor"]["version"] == "1.0.0"
    assert answer.headers["etag"] != etag


@pytest.mark.parametrize("scope", ["fleet", "device"])
def test_an_environment_change_releases_a_held_poll(fleet: Fleet, scope: str) -> None:
    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    thread, answers = held(fleet, device, etag, wait=20)
    changed_at = time.monotonic()
    path = "/fleets/f1" if scope == "fleet" else f"/devices/{device.device_id}"
    assert fleet.call("PUT", f"{path}/environment/LOG_LEVEL", json={"value": "debug"}).status_code == 200
    answer = released(thread, answers, changed_at)
    assert answer.status_code == 200
    assert answer.json()["environment"] == {"LOG_LEVEL": "debug"}


def test_another_fleets_environment_does_not_release_a_held_poll(fleet: Fleet) -> None:
    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    thread, answers = held(fleet, device, etag, wait=1.5)
    assert fleet.call("PUT", "/fleets/other/environment/X", json={"value": "1"}).status_code == 200
    thread.join(timeout=10)
    assert answers[0].status_code == 304


def test_a_device_revoked_during_a_held_poll_is_refused(fleet: Fleet) -> None:
    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    thread, answers = held(fleet, device, etag, wait=20)
    changed_at = time.monotonic()
    assert fleet.call("POST", f"/devices/{device.device_id}/revoke").status_code == 200
    answer = released(thread, answers, changed_at)
    assert (answer.status_code, answer.json()["code"]) == (403, "device_revoked")


def test_pending_and_revoked_devices_and_operators_are_refused(fleet: Fleet) -> None:
    pending = fleet.enroll(fleet.enrollment_token(require_approval=True))
    response = poll(fleet, pending)
    assert (response.status_code, response.json()["code"]) == (403, "device_pending")

    revoked = fleet.enroll()
    assert fleet.call("POST", f"/devices/{revoked.device_id}/revoke").status_code == 200
    response = poll(fleet, revoked)
    assert (response.status_code, response.json()["code"]) == (403, "device_revoked")

    response = fleet.call("GET", "/device/target")
    assert (response.status_code, response.json()["code"]) == (401, "device_token_required")
    assert fleet.api.get("/api/v1/device/target").status_code == 401


def test_bad_waits_and_unknown_query_parameters_are_refused(fleet: Fleet) -> None:
    device = fleet.enroll()
    before = fleet.counts()
    response = poll(fleet, device, wait=1, since="yesterday")
    assert (response.status_code, response.json()["code"]) == (400, "unknown_query_parameter")
    for wait in (-1, 3601, "soon"):
        response = poll(fleet, device, wait=wait)
        assert (response.status_code, response.json()["code"]) == (422, "invalid_request")
    assert fleet.counts() == before


def test_a_device_runs_at_most_64_apps(fleet: Fleet, publisher: Publisher) -> None:
    device = fleet.enroll()
    with fleet.hub.store.transaction() as tx:
        for n in range(64):
            tx.put_assignment(
                Assignment(
                    device_id=device.device_id,
                    app=f"app-{n}",
                    version="1.0.0",
                    release_counter=1,
                    rollback=False,
                    assigned_by=AssignedBy.operator("test"),
                    assigned_at=fleet.clock(),
                )
            )
    response = assign(fleet, device.device_id, "sensor@1.0.0")
    assert (response.status_code, response.json()["code"]) == (409, "too_many_apps")
    assert len(poll(fleet, device).json()["apps"]) == 64


# --- the environment inside the director's signed metadata ------------------------------


def director_targets(fleet: Fleet, device: Device) -> Any:
    response = fleet.device_call(device.identity, "GET", "/tuf/director/targets.json")
    assert response.status_code == 200, response.text
    return Metadata.from_bytes(response.content).signed


def test_director_targets_carry_the_effective_environment(fleet: Fleet, publisher: Publisher, tmp_path: Path) -> None:
    device = Device.enroll(fleet, tmp_path)
    other = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    assert assign(fleet, other.id, "sensor@1.0.0").status_code == 200
    first = director_targets(fleet, device)
    assert first.targets["sensor/1.0.0/compose.yaml"].custom["edgefleet"]["environment"] == {}

    fleet_env = {"set": {"REGION": "eu", "MODE": "eco"}}
    assert fleet.call("PATCH", "/fleets/f1/environment", json=fleet_env).status_code == 200
    assert fleet.call("PUT", f"/devices/{device.id}/environment/MODE", json={"value": "turbo"}).status_code == 200

    changed = director_targets(fleet, device)
    assert changed.version == first.version + 1
    custom = changed.targets["sensor/1.0.0/compose.yaml"].custom["edgefleet"]
    assert custom["environment"] == {"MODE": "turbo", "REGION": "eu"}
    assert director_targets(fleet, device).version == changed.version  # nothing changed: no new version
    assert director_targets(fleet, other).targets["sensor/1.0.0/compose.yaml"].custom["edgefleet"]["environment"] == {
        "MODE": "eco",
        "REGION": "eu",
    }

    # The agent's verification takes the environment from the verified director metadata.
    assigned = device.verifier().assignments()["sensor"]
    assert assigned.custom.environment == {"MODE": "turbo", "REGION": "eu"}
    assert device.update("sensor").version == "1.0.0"

    assert fleet.call("DELETE", f"/devices/{device.id}/environment/MODE").status_code == 200
    reverted = director_targets(fleet, device)
    assert reverted.version == changed.version + 1
    assert reverted.targets["sensor/1.0.0/compose.yaml"].custom["edgefleet"]["environment"] == {
        "MODE": "eco",
        "REGION": "eu",
    }
    assert device.verifier().assignments()["sensor"].custom.environment == {"MODE": "eco", "REGION": "eu"}
