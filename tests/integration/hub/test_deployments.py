"""Deployments on each database: create, preview, priorities, waves driven by device reports, pause, resume,
abort with rollback, newcomers, apply from declarations, `why`, and bad input that changes nothing."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgefleet.hub.api.app import create_app
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Store
from edgefleet.hub.records import Device, UpdateOutcome
from edgefleet.hub.services import director, rollouts
from tests.conftest import Fleet
from tests.publishing import Publisher, assign

pytestmark = pytest.mark.integration


@pytest.fixture
def hub(hub: Hub) -> Hub:
    """The test hub, its app writing fetches only every 30 s: these tests write them by hand (`flush_fetches`)."""
    settings = hub.settings.model_copy(update={"fetch_flush_seconds": 30, "last_seen_flush_seconds": 30})
    return Hub(settings=settings, store=hub.store, keys=hub.keys, clock=hub.clock)


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("sensor", "1.0.0")
    publisher.publish("sensor", "2.0.0")
    return publisher


def add_devices(fleet: Fleet, count: int, *, tags: dict[str, str] | None = None, arch: str = "arm64") -> list[str]:
    """Accepted devices written straight to the registry (enrolling hundreds through the API is slow)."""
    now = fleet.clock()
    ids = []
    with fleet.hub.store.transaction() as tx:
        for _ in range(count):
            device_id = f"00000000-0000-4000-8000-{secrets.token_hex(6)}"
            tx.insert_device(
                Device(
                    id=device_id,
                    fleet="f1",
                    tags=dict(tags or {"env": "prod"}),
                    status="accepted",
                    arch=arch,
                    hostname=None,
                    public_key_pem="test",
                    key_fingerprint=secrets.token_hex(32),
                    cert_pem=None,
                    cert_serial=None,
                    cert_not_after=None,
                    enrollment_token_id=None,
                    enrolled_at=now,
                    updated_at=now,
                    last_seen_at=now,
                    reported={},
                )
            )
            ids.append(device_id)
    return ids


def report(fleet: Fleet, device_ids: list[str], version: str, status: str = "committed", **services: Any) -> None:
    """What the agent would report: its update outcome, and its twin with the running release."""
    now = fleet.clock()
    with fleet.hub.store.transaction() as tx:
        for device_id in device_ids:
            tx.put_update_outcome(
                UpdateOutcome(
                    device_id=device_id,
                    app="sensor",
                    seq=1,
                    at=now,
                    status=status,
                    from_release="1.0.0",
                    to_release=version,
                    service=None,
                    reason=None,
                    logs=None,
                )
            )
            running = version if status == "committed" else "1.0.0"
            health = services or {"web": {"state": "running", "health": "healthy"}}
            tx.update_device(
                device_id, last_seen_at=now, reported={"apps": {"sensor": {"version": running, "services": health}}}
            )


def assigned(fleet: Fleet, device_ids: list[str] | None = None) -> dict[str, tuple[str, str]]:
    with fleet.hub.store.transaction(readonly=True) as tx:
        found = tx.assignments_for_app("sensor")
    return {k: v for k, v in found.items() if device_ids is None or k in device_ids}


def deploy(fleet: Fleet, token: str | None = None, **body: Any) -> Any:
    body = {"app": "sensor", "version": "2.0.0", "target": "env=prod", **body}
    return fleet.call("POST", "/deployments", token, json=body)


def status(fleet: Fleet, name: str) -> dict[str, Any]:
    response = fleet.call("GET", f"/deployments/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def tick(fleet: Fleet, seconds: float = 1) -> None:
    fleet.clock.advance(timedelta(seconds=seconds))
    rollouts.tick(fleet.hub)


def test_a_member_is_downloading_once_its_devices_fetch_is_written(fleet: Fleet, publisher: Publisher) -> None:
    [device_id] = add_devices(fleet, 1)
    assert deploy(fleet, name="r1", waves="100%").status_code == 201
    with fleet.hub.store.transaction(readonly=True) as tx:
        device = tx.get_device(device_id)
    assert device is not None
    targets = director.read(fleet.hub, device, "targets.json")  # what its agent fetches after the assignment
    assert b"2.0.0" in targets
    tick(fleet)
    assert status(fleet, "r1")["waves"][0]["downloading"] == 0  # noted, written in the next batch
    assert fleet.hub.flush_fetches() == 1
    tick(fleet)  # the scheduler's pass judges the member by it
    assert status(fleet, "r1")["waves"][0]["downloading"] == 1


def test_the_app_writes_fetches_promptly_and_last_seen_in_its_own_time(
    fleet: Fleet, hub: Hub, publisher: Publisher
) -> None:
    [device_id] = add_devices(fleet, 1)
    assert deploy(fleet, name="r1", waves="100%").status_code == 201
    settings = hub.settings.model_copy(update={"fetch_flush_seconds": 0.2, "last_seen_flush_seconds": 30})
    answering = Hub(settings=settings, store=Store(hub.store.url), keys=hub.keys, clock=hub.clock)
    try:
        with TestClient(create_app(answering), raise_server_exceptions=False):
            with answering.store.transaction(readonly=True) as tx:
                device = tx.get_device(device_id)
            assert device is not None
            answering.last_seen.note(device_id, fleet.clock() + timedelta(minutes=5), recorded=None)
            director.read(answering, device, "targets.json")  # noted; its app writes it, nobody flushes by hand
            deadline = time.monotonic() + 5
            while answering.fetches.pending() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert answering.fetches.pending() == 0
            assert answering.last_seen.pending() == 1  # written every 30 s, not with the fetches
    finally:
        answering.store.dispose()
    tick(fleet)
    assert status(fleet, "r1")["waves"][0]["downloading"] == 1


def test_a_fetch_noted_before_a_members_assignment_does_not_mark_it(fleet: Fleet, publisher: Publisher) -> None:
    [device_id] = add_devices(fleet, 1)
    before = fleet.clock()
    fleet.clock.advance(timedelta(seconds=1))
    assert deploy(fleet, name="r1", waves="100%").status_code == 201
    fleet.hub.fetches.note(device_id, before, recorded=None)  # of the targets before its assignment
    fleet.hub.flush_fetches()
    tick(fleet)
    assert status(fleet, "r1")["waves"][0]["downloading"] == 0
    fleet.hub.fetches.note(device_id, fleet.clock(), recorded=None)
    fleet.hub.flush_fetches()
    tick(fleet)
    assert status(fleet, "r1")["waves"][0]["downloading"] == 1


def test_a_rollout_goes_wave_by_wave_on_device_reports(fleet: Fleet, publisher: Publisher) -> None:
    devices = add_devices(fleet, 20)
    other = add_devices(fleet, 3, tags={"env": "dev"})
    created = deploy(fleet, name="r1", waves="10%,50%,100%", bake_seconds=60)
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "active"
    first = assigned(fleet)
    assert len(first) == 2  # the first wave is assigned before the call returns
    assert set(first) <= set(devices)
    assert set(first.values()) == {("2.0.0", "deployment:r1")}

    waves = status(fleet, "r1")["waves"]
    assert [w["reach"] for w in waves] == [2, 10, 20]
    assert waves[0] == {
        "wave": 1, "reach": 2, "size": 2, "pending": 2, "downloading": 0, "updated": 0, "failed": 0,
        "offline": 0, "restored": 0,
    }  # fmt: skip

    report(fleet, list(first), "2.0.0")
    tick(fleet)
    assert status(fleet, "r1")["deployment"]["bake_started_at"] is not None
    tick(fleet, 30)
    assert len(assigned(fleet)) == 2  # baking
    tick(fleet, 31)
    assert status(fleet, "r1")["deployment"]["wave"] == 2
    assert len(assigned(fleet)) == 10
    report(fleet, list(assigned(fleet)), "2.0.0")
    tick(fleet)
    tick(fleet, 61)
    assert len(assigned(fleet)) == 20
    report(fleet, devices, "2.0.0")
    tick(fleet)
    tick(fleet, 61)
    final = status(fleet, "r1")
    assert final["deployment"]["state"] == "completed"
    assert sum(w["updated"] for w in final["waves"]) == 20
    assert not set(assigned(fleet)) & set(other)  # never outside the target
    actions = [e["detail"].get("event") for e in fleet.call("GET", "/audit", params={"limit": 100}).json()]
    assert "wave 2 started" in actions
    assert "completed" in actions


def test_a_paced_rollout_tells_more_devices_as_earlier_ones_fetch(fleet: Fleet, publisher: Publisher) -> None:
    add_devices(fleet, 12)
    created = deploy(fleet, name="r1", waves="100%", max_pending=5)
    assert created.status_code == 201, created.text
    assert created.json()["max_pending"] == 5
    told = assigned(fleet)
    assert len(told) == 5  # the first pass, before the call returned
    with fleet.hub.store.transaction(readonly=True) as tx:
        kept = tx.find_deployment("r1")
    assert kept is not None
    assert kept.last_held_at == fleet.clock()  # the wave's timeout counts from the pass that held devices back
    tick(fleet)
    assert len(assigned(fleet)) == 5  # nobody fetched: nobody more
    with fleet.hub.store.transaction(readonly=True) as tx:
        fetching = [tx.get_device(d) for d in sorted(told)[:3]]
    for device in fetching:
        assert device is not None
        director.read(fleet.hub, device, "targets.json")  # the agent's fetch of its new assignment
    assert fleet.hub.flush_fetches() == 3
    tick(fleet)
    assert len(assigned(fleet)) == 8  # three began: three more told
    waves = status(fleet, "r1")["waves"]
    assert (waves[0]["downloading"], waves[0]["pending"]) == (3, 5)
    report(fleet, list(assigned(fleet)), "2.0.0")
    tick(fleet)
    assert len(assigned(fleet)) == 12
    report(fleet, list(assigned(fleet)), "2.0.0")
    tick(fleet)
    assert status(fleet, "r1")["deployment"]["state"] == "completed"
    applied = fleet.call(
        "POST",
        "/deployments/apply",
        json={"deployments": [{"name": "r1", "app": "sensor", "version": "2.0.0", "target": "env=prod"}]},
    )
    assert applied.json()["results"] == [{"name": "r1", "outcome": "updated"}]  # the pace dropped, in place
    assert status(fleet, "r1")["deployment"]["max_pending"] is None


def test_failures_past_the_threshold_pause_and_resume_accepts_them(fleet: Fleet, publisher: Publisher) -> None:
    devices = add_devices(fleet, 20)
    assert deploy(fleet, name="r2", waves="5,100%", max_failure="20%").status_code == 201
    first = list(assigned(fleet))
    report(fleet, first[:2], "2.0.0", status="failed")  # 2 of 5 > 20%
    report(fleet, first[2:], "2.0.0")
    tick(fleet)
    paused = status(fleet, "r2")
    assert paused["deployment"]["state"] == "paused"
    assert paused["deployment"]["reason"] == "wave 1: 2 of 5 devices failed (threshold 20%)"
    assert paused["waves"][0]["failed"] == 2
    tick(fleet, 3600)
    assert len(assigned(fleet)) == 5  # paused: nothing more
    assert fleet.call("POST", "/deployments/r2/pause").status_code == 409

    resumed = fleet.call("POST", "/deployments/r2/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "active"
    assert len(assigned(fleet)) == 20  # wave 2 started at once
    report(fleet, devices, "2.0.0")
    tick(fleet)
    assert status(fleet, "r2")["deployment"]["state"] == "completed"


def test_rollback_on_failure_returns_updated_devices_to_the_previous_release(
    fleet: Fleet, publisher: Publisher
) -> None:
    devices = add_devices(fleet, 10)
    for device_id in devices[:6]:
        assert assign(fleet, device_id, "sensor@1.0.0").status_code == 200
    assert deploy(fleet, name="r3", waves="50%,100%", on_failure="rollback").status_code == 201
    first = list(assigned(fleet, None))
    wave1 = [d for d, (v, _) in assigned(fleet).items() if v == "2.0.0"]
    assert len(wave1) == 5
    report(fleet, wave1[:4], "2.0.0")
    report(fleet, wave1[4:], "2.0.0", status="rolled-back")
    tick(fleet)
    result = status(fleet, "r3")
    assert result["deployment"]["state"] == "rolled-back"
    assert result["waves"][0]["restored"] == 5
    after = assigned(fleet)
    for device_id in wave1:
        if device_id in devices[:6]:
            assert after[device_id] == ("1.0.0", "deployment:r3:rollback")
        else:
            assert device_id not in after  # it had no release of the app before
    assert set(first) >= set(after)
    with fleet.hub.store.transaction(readonly=True) as tx:
        rolled = [a for d in wave1 for a in tx.list_assignments(d)]
    assert all(a.rollback for a in rolled)  # 1.0.0 is older than 2.0.0: signed as a deliberate rollback


def test_abort_with_rollback_and_abort_without(fleet: Fleet, publisher: Publisher) -> None:
    devices = add_devices(fleet, 4)
    for device_id in devices:
        assert assign(fleet, device_id, "sensor@1.0.0").status_code == 200
    assert deploy(fleet, name="r4", waves="50%,100%").status_code == 201
    aborted = fleet.call("POST", "/deployments/r4/abort", json={"rollback": True})
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["state"] == "rolled-back"
    assert set(assigned(fleet).values()) == {("1.0.0", "deployment:r4:rollback"), ("1.0.0", "user:admin")}
    assert fleet.call("POST", "/deployments/r4/abort", json={}).status_code == 409
    assert fleet.call("POST", "/deployments/r4/resume").status_code == 409

    assert deploy(fleet, name="r5", waves="50%,100%").status_code == 201
    stopped = fleet.call("POST", "/deployments/r5/abort", json={})
    assert stopped.json()["state"] == "aborted"
    kept = [d for d, (v, _) in assigned(fleet).items() if v == "2.0.0"]
    assert len(kept) == 2  # devices keep what they have
    tick(fleet, 7200)
    assert len([d for d, (v, _) in assigned(fleet).items() if v == "2.0.0"]) == 2
    finished = status(fleet, "r5")  # a finished rollout still shows how far it got
    assert finished["targeted"] == 2
    assert [w["size"] for w in finished["waves"]] == [2, 0]


def test_offline_devices_do_not_block_a_wave_and_update_when_back(fleet: Fleet, publisher: Publisher) -> None:
    devices = add_devices(fleet, 4)
    assert deploy(fleet, name="r6", waves="100%", wave_timeout_seconds=600, max_failure="50%").status_code == 201
    report(fleet, devices[:3], "2.0.0")
    fleet.clock.advance(timedelta(minutes=5))  # past offline_after (3 min) for the one that said nothing
    report(fleet, devices[:3], "2.0.0")  # the others keep talking
    tick(fleet)
    assert status(fleet, "r6")["waves"][0]["offline"] == 1
    tick(fleet, 600)
    done = status(fleet, "r6")
    assert done["deployment"]["state"] == "completed"
    assert done["waves"][0]["offline"] == 1
    report(fleet, devices[3:], "2.0.0")  # back, it installed what it was assigned
    tick(fleet)
    assert status(fleet, "r6")["waves"][0]["updated"] == 4


def test_an_offline_newcomer_assigned_as_its_wave_times_out_is_not_failed(fleet: Fleet, publisher: Publisher) -> None:
    devices = add_devices(fleet, 4)
    created = deploy(fleet, name="r6b", waves="100%", wave_timeout_seconds=600, max_failure="10%")
    assert created.status_code == 201
    report(fleet, devices[:3], "2.0.0")
    fleet.clock.advance(timedelta(minutes=9))
    report(fleet, devices[:3], "2.0.0")  # online; the fourth has been silent for 9 minutes
    [late] = add_devices(fleet, 1)  # joins just before the timeout, and is offline
    with fleet.hub.store.transaction() as tx:
        tx.update_device(late, last_seen_at=fleet.clock() - timedelta(hours=1))
    tick(fleet, 120)  # the wave times out in the pass that assigns the newcomer
    done = status(fleet, "r6b")
    assert done["deployment"]["state"] == "completed", done["deployment"]["reason"]
    assert (done["waves"][0]["failed"], done["waves"][0]["offline"]) == (0, 2)


def test_devices_enrolled_or_retagged_later_get_the_matching_deployment(fleet: Fleet, publisher: Publisher) -> None:
    add_devices(fleet, 2)
    assert deploy(fleet, name="r7").status_code == 201
    report(fleet, list(assigned(fleet)), "2.0.0")
    tick(fleet)
    assert status(fleet, "r7")["deployment"]["state"] == "completed"
    newcomer = add_devices(fleet, 1)[0]
    moved = add_devices(fleet, 1, tags={"env": "dev"})[0]
    tick(fleet)
    assert assigned(fleet, [newcomer]) == {newcomer: ("2.0.0", "deployment:r7")}
    assert not assigned(fleet, [moved])
    assert fleet.call("PATCH", f"/devices/{moved}/tags", json={"set": {"env": "prod"}}).status_code == 200
    tick(fleet)
    assert assigned(fleet, [moved]) == {moved: ("2.0.0", "deployment:r7")}
    # Retagged out, assigned by hand, retagged back: the deployment takes it again.
    assert fleet.call("PATCH", f"/devices/{moved}/tags", json={"set": {"env": "dev"}}).status_code == 200
    tick(fleet)
    assert assign(fleet, moved, "sensor@1.0.0", rollback=True).status_code == 200
    assert fleet.call("PATCH", f"/devices/{moved}/tags", json={"set": {"env": "prod"}}).status_code == 200
    tick(fleet)
    assert assigned(fleet, [moved]) == {moved: ("2.0.0", "deployment:r7")}


def test_the_highest_priority_wins_and_equal_overlapping_priorities_are_refused(
    fleet: Fleet, publisher: Publisher
) -> None:
    canary = add_devices(fleet, 1, tags={"env": "prod", "ring": "canary"})[0]
    plain = add_devices(fleet, 1)[0]
    assert deploy(fleet, name="base", version="1.0.0", priority=1).status_code == 201
    refused = deploy(fleet, name="clash", target="ring=canary", priority=1)
    assert refused.status_code == 409
    assert refused.json()["code"] == "priority_conflict"
    assert deploy(fleet, name="dev-only", target="env=dev", priority=1).status_code == 201  # cannot overlap
    assert deploy(fleet, name="canaries", target="ring=canary", priority=5).status_code == 201
    tick(fleet)
    assert assigned(fleet)[canary] == ("2.0.0", "deployment:canaries")
    assert assigned(fleet)[plain] == ("1.0.0", "deployment:base")

    why = fleet.call("GET", f"/devices/{canary}/why")
    assert why.status_code == 200, why.text
    (entry,) = why.json()["apps"]
    assert entry["deployment"] == "canaries"
    assert entry["losing"] == ["base (priority 1)"]
    assert entry["explanation"].startswith("Deployment canaries (priority 5, target: ring=canary) selects this device")
    assert "Also selected by base (priority 1), which lose on priority." in entry["explanation"]
    manual = add_devices(fleet, 1, tags={"env": "lab"})[0]
    assert assign(fleet, manual, "sensor@1.0.0").status_code == 200
    (by_hand,) = fleet.call("GET", f"/devices/{manual}/why").json()["apps"]
    assert (
        by_hand["explanation"] == "sensor@1.0.0 was assigned by hand (user:admin); no deployment selects this device."
    )


def test_preview_lists_what_a_deployment_would_reach(fleet: Fleet, publisher: Publisher) -> None:
    devices = add_devices(fleet, 10)
    add_devices(fleet, 2, arch="riscv64")  # no image for it
    add_devices(fleet, 3, tags={"env": "dev"})
    body = {"name": "p1", "app": "sensor", "version": "2.0.0", "target": "env=prod", "waves": "20%,100%"}
    preview = fleet.call("POST", "/deployments/preview", json=body)
    assert preview.status_code == 200, preview.text
    found = preview.json()
    assert (found["total"], found["reach"], found["incompatible"]) == (10, [2, 10], 2)
    assert {d["device_id"] for d in found["devices"]} == set(devices)
    canaries = [d["device_id"] for d in found["devices"] if d["wave"] == 1]
    assert fleet.counts()["deployments"] == 0  # nothing created
    assert deploy(fleet, name="p1", waves="20%,100%").status_code == 201
    assert sorted(assigned(fleet)) == sorted(canaries)  # the preview's canaries are the real ones


DECLARED = {
    "name": "sensor-prod",
    "app": "sensor",
    "version": "1.0.0",
    "target": "fleet=f1 and env=prod",
    "priority": 3,
    "waves": "50%,100%",
    "bake_seconds": 0,
}


def test_apply_is_idempotent_and_a_new_release_restarts_the_rollout(fleet: Fleet, publisher: Publisher) -> None:
    add_devices(fleet, 4)
    first = fleet.call("POST", "/deployments/apply", json={"deployments": [DECLARED]})
    assert first.status_code == 200, first.text
    assert first.json()["results"] == [{"name": "sensor-prod", "outcome": "created"}]
    before, audit_before = fleet.counts(), fleet.call("GET", "/audit", params={"limit": 1000}).json()
    again = fleet.call("POST", "/deployments/apply", json={"deployments": [DECLARED]})
    assert again.json()["results"] == [{"name": "sensor-prod", "outcome": "unchanged"}]
    assert fleet.counts() == before
    assert fleet.call("GET", "/audit", params={"limit": 1000}).json() == audit_before

    same_meaning = {**DECLARED, "target": "fleet = f1   and env=prod", "waves": "50%, 100%"}
    assert fleet.call("POST", "/deployments/apply", json={"deployments": [same_meaning]}).json()["results"] == [
        {"name": "sensor-prod", "outcome": "unchanged"}
    ]
    moved = fleet.call("POST", "/deployments/apply", json={"deployments": [{**DECLARED, "priority": 4}]})
    assert moved.json()["results"] == [{"name": "sensor-prod", "outcome": "updated"}]
    restarted = fleet.call("POST", "/deployments/apply", json={"deployments": [{**DECLARED, "version": "2.0.0"}]})
    assert restarted.json()["results"] == [{"name": "sensor-prod", "outcome": "restarted"}]
    current = status(fleet, "sensor-prod")["deployment"]
    assert (current["version"], current["revision"], current["wave"], current["priority"]) == ("2.0.0", 2, 1, 3)
    assert sorted(v for v, _ in assigned(fleet).values()).count("2.0.0") == 2

    # All or none: one bad declaration and nothing changes.
    before = fleet.counts()
    bad = [{**DECLARED, "name": "fine", "target": "env=dev"}, {**DECLARED, "name": "broken", "version": "9.9.9"}]
    refused = fleet.call("POST", "/deployments/apply", json={"deployments": bad})
    assert refused.status_code == 404
    assert fleet.counts()["deployments"] == before["deployments"]
    duplicate = fleet.call("POST", "/deployments/apply", json={"deployments": [DECLARED, DECLARED]})
    assert duplicate.status_code == 400


@pytest.mark.parametrize(
    ("body", "status_code", "code"),
    [
        ({"target": "env=prod and"}, 400, "invalid_target"),
        ({"target": "env=(prod)"}, 400, "invalid_target"),
        ({"waves": "50%,10%"}, 400, "invalid_rollout"),
        ({"waves": "10%"}, 400, "invalid_rollout"),
        ({"max_failure": "150%"}, 400, "invalid_rollout"),
        ({"version": "9.9.9"}, 404, "release_not_found"),
        ({"target": "x" * 3000}, 422, "invalid_request"),
        ({"name": "../etc"}, 422, "invalid_request"),
        ({"priority": -1}, 422, "invalid_request"),
        ({"on_failure": "explode"}, 422, "invalid_request"),
        ({"wave_timeout_seconds": 1}, 422, "invalid_request"),
        ({"surprise": 1}, 422, "invalid_request"),
        ({"app": None}, 422, "invalid_request"),
        ({"max_pending": 0}, 422, "invalid_request"),
        ({"max_pending": -5}, 422, "invalid_request"),
        ({"max_pending": 10**9}, 422, "invalid_request"),
        ({"max_pending": "ten"}, 422, "invalid_request"),
        ({"max_pending": 1.5}, 422, "invalid_request"),
    ],
)
def test_bad_deployments_are_refused_and_change_nothing(
    fleet: Fleet, publisher: Publisher, body: dict[str, Any], status_code: int, code: str
) -> None:
    add_devices(fleet, 2)
    before = fleet.counts()
    response = deploy(fleet, **{"name": "bad", **body})
    assert response.status_code == status_code, response.text
    assert response.json()["code"] == code
    after = fleet.counts()
    assert after.pop("audit_log") - before.pop("audit_log") <= 1  # at most the refusal, audited
    assert after == before


def test_a_bad_target_says_where(fleet: Fleet, publisher: Publisher) -> None:
    response = deploy(fleet, target="env=prod and and lab")
    assert response.json()["message"].endswith("at position 13")


def test_viewers_read_but_cannot_change_deployments(fleet: Fleet, publisher: Publisher) -> None:
    add_devices(fleet, 2)
    assert deploy(fleet, name="v1").status_code == 201
    viewer = fleet.operator_token("viewer")
    assert deploy(fleet, viewer, name="v2").status_code == 403
    for verb in ("pause", "resume"):
        assert fleet.call("POST", f"/deployments/v1/{verb}", viewer).status_code == 403
    assert fleet.call("POST", "/deployments/v1/abort", viewer, json={}).status_code == 403
    assert fleet.call("GET", "/deployments/v1", viewer).status_code == 200
    assert fleet.call("GET", "/deployments", viewer).json()["items"][0]["name"] == "v1"
    assert fleet.call("GET", "/deployments/nope").status_code == 404
