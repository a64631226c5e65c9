"""Device events and operator retry on each database backend: recorded once, audited, bounded; retries signed."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.generation.modes import GenerationMode
from tuf.api.metadata import Metadata

from edgefleet import crypto
from edgefleet.agent.identity import LocalIdentity
from edgefleet.hub import audit
from tests.conftest import Fleet
from tests.integration.hub.test_openapi_fuzz import CONFIG, exercise
from tests.publishing import Device, Publisher, assign

pytestmark = pytest.mark.integration

AT = "2026-11-22T09:00:00+00:00"


def event(seq: int, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "seq": seq,
        "at": AT,
        "kind": "update",
        "app": "sensor",
        "from_release": "1.0.0",
        "to_release": "1.1.0",
        "status": "failed",
        "service": "web",
        "reason": "exited with code 3",
        "logs": "starting\npanic: no config\n",
    }
    values.update(fields)
    return values


def send(fleet: Fleet, device: LocalIdentity, events: list[dict[str, Any]], dropped: int = 0) -> Any:
    return fleet.device_call(device, "POST", "/device/events", json={"events": events, "dropped": dropped})


def acknowledged(fleet: Fleet, device: LocalIdentity) -> int:
    response = send(fleet, device, [])
    assert response.status_code == 200, response.text
    return int(response.json()["acknowledged"])


def audit_entries(fleet: Fleet, action_prefix: str) -> list[dict[str, Any]]:
    rows = fleet.call("GET", "/audit", params={"limit": 1000}).json()
    return [row for row in reversed(rows) if row["action"].startswith(action_prefix)]


def updates(fleet: Fleet, device_id: str) -> dict[str, Any]:
    response = fleet.call("GET", f"/devices/{device_id}/state")
    assert response.status_code == 200, response.text
    return dict(response.json()["updates"])


def assert_chain_ok(fleet: Fleet) -> None:
    report = fleet.call("GET", "/audit/verify").json()
    assert report["ok"], report


# --- events ------------------------------------------------------------------------------


def test_events_are_audited_with_the_device_as_actor_and_kept_as_the_latest_outcome(fleet: Fleet) -> None:
    device = fleet.enroll()
    batch = [
        event(1, app="sensor", status="committed", from_release=None, to_release="1.0.0", service=None, reason=None),
        event(2),
        event(3, app="analytics", status="no-space", to_release="2.0.0", service=None, logs=None),
    ]
    response = send(fleet, device, batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"acknowledged": 3}

    actor = f"device:{device.device_id}"
    entries = audit_entries(fleet, "device.update.")
    assert [(e["action"], e["actor"], e["target"], e["outcome"]) for e in entries] == [
        ("device.update.committed", actor, actor, "ok"),
        ("device.update.failed", actor, actor, "ok"),
        ("device.update.no-space", actor, actor, "ok"),
    ]
    assert entries[1]["detail"] == {
        "app": "sensor",
        "from_release": "1.0.0",
        "to_release": "1.1.0",
        "service": "web",
        "reason": "exited with code 3",
        "logs": "starting\npanic: no config\n",
        "seq": 2,
        "at": AT,
    }
    assert_chain_ok(fleet)

    # The latest outcome per app: sensor's failure (seq 2) replaced its commit (seq 1).
    assert updates(fleet, device.device_id) == {
        "analytics": {
            "status": "no-space",
            "from_release": "1.0.0",
            "to_release": "2.0.0",
            "service": None,
            "reason": "exited with code 3",
            "logs": None,
            "at": AT.replace("+00:00", "Z"),
        },
        "sensor": {
            "status": "failed",
            "from_release": "1.0.0",
            "to_release": "1.1.0",
            "service": "web",
            "reason": "exited with code 3",
            "logs": "starting\npanic: no config\n",
            "at": AT.replace("+00:00", "Z"),
        },
    }


def test_event_times_are_kept_in_utc(fleet: Fleet) -> None:
    device = fleet.enroll()
    assert send(fleet, device, [event(1, at="2026-11-22T10:30:00+01:30")]).status_code == 200
    assert updates(fleet, device.device_id)["sensor"]["at"] == "2026-11-22T09:00:00Z"
    assert audit_entries(fleet, "device.update.")[0]["detail"]["at"] == AT


def test_a_resent_batch_is_recorded_once_and_gaps_are_fine(fleet: Fleet) -> None:
    device = fleet.enroll()
    first = [event(1, status="interrupted"), event(2, status="rolled-back")]
    assert send(fleet, device, first).json() == {"acknowledged": 2}
    before = fleet.counts()

    # The answer was lost: the device sends the same batch again.
    again = send(fleet, device, first)
    assert again.status_code == 200
    assert again.json() == {"acknowledged": 2}
    assert fleet.counts() == before
    assert updates(fleet, device.device_id)["sensor"]["status"] == "rolled-back"

    # Overlapping: only the new one is recorded. A gap (the device dropped 3..9) is fine.
    assert send(fleet, device, [event(2, status="rolled-back"), event(10, status="committed")]).json() == {
        "acknowledged": 10
    }
    actions = [e["action"] for e in audit_entries(fleet, "device.update.")]
    assert actions == ["device.update.interrupted", "device.update.rolled-back", "device.update.committed"]
    assert updates(fleet, device.device_id)["sensor"]["status"] == "committed"

    # An old event arriving late never replaces a newer outcome.
    assert send(fleet, device, [event(5, status="failed")]).json() == {"acknowledged": 10}
    assert updates(fleet, device.device_id)["sensor"]["status"] == "committed"
    assert_chain_ok(fleet)


def test_each_device_has_its_own_sequence(fleet: Fleet) -> None:
    token = fleet.enrollment_token(uses=2)
    one, other = fleet.enroll(token), fleet.enroll(token)
    assert send(fleet, one, [event(7)]).json() == {"acknowledged": 7}
    assert send(fleet, other, [event(1, status="committed")]).json() == {"acknowledged": 1}
    assert acknowledged(fleet, one) == 7
    assert updates(fleet, one.device_id)["sensor"]["status"] == "failed"
    assert updates(fleet, other.device_id)["sensor"]["status"] == "committed"
    actors = {e["actor"] for e in audit_entries(fleet, "device.update.")}
    assert actors == {f"device:{one.device_id}", f"device:{other.device_id}"}


@pytest.mark.parametrize("seqs", [[2, 1], [1, 1], [1, 3, 2]], ids=["decreasing", "repeated", "shuffled"])
def test_out_of_order_events_in_a_batch_are_refused(fleet: Fleet, seqs: list[int]) -> None:
    device = fleet.enroll()
    before = fleet.counts()
    response = send(fleet, device, [event(seq) for seq in seqs])
    assert (response.status_code, response.json()["code"]) == (422, "invalid_request")
    assert "increasing seq" in response.json()["message"]
    assert fleet.counts() == before
    assert acknowledged(fleet, device) == 0


def test_dropped_events_are_audited_once(fleet: Fleet) -> None:
    device = fleet.enroll()
    response = send(fleet, device, [event(8), event(9)], dropped=5)
    assert response.json() == {"acknowledged": 9}
    dropped = audit_entries(fleet, "device.events.")
    assert [(e["action"], e["actor"], e["detail"]) for e in dropped] == [
        ("device.events.dropped", f"device:{device.device_id}", {"dropped": 5, "before_seq": 8})
    ]
    before = fleet.counts()
    assert send(fleet, device, [event(8), event(9)], dropped=5).json() == {"acknowledged": 9}  # a re-send
    assert fleet.counts() == before
    assert send(fleet, device, [event(10)]).json() == {"acknowledged": 10}  # nothing dropped: no entry
    assert len(audit_entries(fleet, "device.events.")) == 1
    assert_chain_ok(fleet)


def test_a_full_batch_of_the_largest_events_is_accepted_and_its_audit_details_are_bounded(fleet: Fleet) -> None:
    device = fleet.enroll()
    logs = "".join(f"line {n:05d} é\n" for n in range(1000))[-8192:]
    reason = "r" * 2000
    batch = [event(seq, logs=logs, reason=reason) for seq in range(1, 101)]
    response = send(fleet, device, batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"acknowledged": 100}

    entries = audit_entries(fleet, "device.update.")
    assert len(entries) == 100
    detail = entries[-1]["detail"]
    assert len(audit.canonical(detail)) <= audit.MAX_DETAIL_BYTES
    assert detail["truncated"] is True
    assert logs.endswith(detail["logs"])  # the newest lines are kept
    assert detail["logs"].endswith("line 00999 é\n")
    assert (detail["app"], detail["seq"], detail["reason"]) == ("sensor", 100, reason)
    assert updates(fleet, device.device_id)["sensor"]["logs"] == logs  # whole in the latest outcome
    assert_chain_ok(fleet)


# --- bad input ------------------------------------------------------------------------------

BAD_EVENTS: dict[str, Any] = {
    "seq-string": [{**event(1), "seq": "1"}],
    "seq-bool": [{**event(1), "seq": True}],
    "seq-float": [{**event(1), "seq": 1.0}],
    "seq-zero": [event(0)],
    "seq-negative": [event(-4)],
    "seq-2**63": [event(2**63)],
    "at-number": [event(1, at=1_700_000_000)],
    "at-naive": [event(1, at="2026-11-22T09:00:00")],
    "at-garbage": [event(1, at="yesterday")],
    "at-overflow": [event(1, at="9999-12-31T23:59:59-01:00")],
    "unknown-status": [event(1, status="exploded")],
    "unknown-kind": [event(1, kind="reboot")],
    "bad-app": [event(1, app="Bad App")],
    "bad-release": [event(1, to_release="../../etc")],
    "missing-release": [{k: v for k, v in event(1).items() if k != "to_release"}],
    "bad-service": [event(1, service="web/../x")],
    "long-service": [event(1, service="s" * 64)],
    "long-reason": [event(1, reason="r" * 2001)],
    "long-logs": [event(1, logs="l" * 8193)],
    "nul-in-logs": [event(1, logs="a\x00b")],
    "reason-not-string": [event(1, reason=["x"])],
    "unknown-event-field": [event(1, admin=True)],
    "too-many": [event(seq) for seq in range(1, 102)],
    "event-not-object": ["event"],
}


@pytest.mark.parametrize("events", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_malformed_events_are_422_and_change_nothing(fleet: Fleet, events: Any) -> None:
    device = fleet.enroll()
    assert send(fleet, device, [event(1)]).status_code == 200
    before = fleet.counts()
    response = send(fleet, device, events)
    assert (response.status_code, response.json()["code"]) == (422, "invalid_request"), response.text
    assert fleet.counts() == before
    assert acknowledged(fleet, device) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"events": [], "dropped": -1},
        {"events": [], "dropped": 2**63},
        {"events": [], "dropped": "5"},
        {"events": [], "extra": 1},
        {"events": {"seq": 1}},
        [],
        "events",
        None,
    ],
    ids=["dropped-negative", "dropped-huge", "dropped-string", "unknown-field", "events-object", "list", "str", "null"],
)
def test_malformed_batches_are_422_and_change_nothing(fleet: Fleet, body: Any) -> None:
    device = fleet.enroll()
    before = fleet.counts()
    response = fleet.device_call(device, "POST", "/device/events", json=body)
    assert (response.status_code, response.json()["code"]) == (422, "invalid_request"), response.text
    assert fleet.counts() == before


def test_lone_surrogates_are_422(fleet: Fleet) -> None:
    device = fleet.enroll()
    before = fleet.counts()
    raw = json.dumps({"events": [event(1, reason="\ud800")]}).encode()  # valid JSON text, not a valid string
    response = fleet.device_call(
        device, "POST", "/device/events", content=raw, headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json()["code"]) == (422, "invalid_request")
    assert fleet.counts() == before


@pytest.mark.parametrize(
    "raw", [b"{", b"not json", b'{"events": [', b"\xff\xfe\x00"], ids=["brace", "text", "cut", "bin"]
)
def test_non_json_is_400(fleet: Fleet, raw: bytes) -> None:
    device = fleet.enroll()
    before = fleet.counts()
    response = fleet.device_call(
        device, "POST", "/device/events", content=raw, headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json()["code"]) == (400, "malformed_json")
    assert fleet.counts() == before


def test_huge_bodies_are_413_by_length_and_while_streaming(fleet: Fleet) -> None:
    device = fleet.enroll()
    limit = fleet.hub.settings.max_events_bytes
    assert limit > fleet.hub.settings.max_body_bytes  # a full batch needs more than other requests
    before = fleet.counts()
    body = json.dumps({"events": [event(1, logs="x" * limit)]}).encode()
    response = fleet.device_call(
        device, "POST", "/device/events", content=body, headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")

    def chunks() -> Any:
        yield b'{"events": [], "dropped": 0, "pad": "'
        for _ in range(limit // 65536 + 2):
            yield b"p" * 65536
        yield b'"}'

    response = fleet.device_call(
        device, "POST", "/device/events", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")
    assert fleet.counts() == before


def test_only_the_device_itself_may_send_its_events(fleet: Fleet, tmp_path: Path) -> None:
    token = fleet.enrollment_token(uses=3)
    device, other = fleet.enroll(token), fleet.enroll(token)
    before = fleet.counts()
    body = {"events": [event(1)]}

    response = fleet.api.post("/api/v1/device/events", json=body)
    assert (response.status_code, response.json()["code"]) == (401, "missing_credentials")
    response = fleet.call("POST", "/device/events", json=body)  # an operator token
    assert (response.status_code, response.json()["code"]) == (401, "device_token_required")
    # A token naming the device but signed by another device's key.
    forged = crypto.mint_device_token(
        other.key, device_id=device.device_id, now=fleet.clock(), lifetime=timedelta(minutes=5)
    )
    response = fleet.api.post("/api/v1/device/events", json=body, headers={"Authorization": f"Bearer {forged}"})
    assert (response.status_code, response.json()["code"]) == (401, "invalid_device_token")
    assert fleet.counts() == before

    # The other device's events are its own: they never touch this device's records.
    assert send(fleet, other, [event(5)]).json() == {"acknowledged": 5}
    assert updates(fleet, device.device_id) == {}
    assert acknowledged(fleet, device) == 0

    pending = fleet.enroll(fleet.enrollment_token(require_approval=True))
    response = send(fleet, pending, [event(1)])
    assert (response.status_code, response.json()["code"]) == (403, "device_pending")
    assert fleet.call("POST", f"/devices/{device.device_id}/revoke").status_code == 200
    before = fleet.counts()
    response = send(fleet, device, [event(1)])
    assert (response.status_code, response.json()["code"]) == (403, "device_revoked")
    assert fleet.counts() == before


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_the_events_endpoint_never_fails_on_generated_input_from_a_device(fleet: Fleet, mode: GenerationMode) -> None:
    device = fleet.enroll()
    schema = schemathesis.openapi.from_asgi("/openapi.json", fleet.api.app, config=CONFIG)
    operation = next(
        op for op in (result.ok() for result in schema.get_all_operations()) if op.label == "POST /api/v1/device/events"
    )
    statuses = exercise(operation, mode, lambda: {"Authorization": f"Bearer {device.token(now=fleet.clock())}"})
    if mode is GenerationMode.POSITIVE:
        assert 200 in statuses, statuses  # some generated batches were recorded, not only refused
    assert_chain_ok(fleet)


# --- operator retry ---------------------------------------------------------------------------


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("sensor", "1.0.0")
    publisher.publish("analytics", "2.0.0")
    return publisher


def director_custom(fleet: Fleet, device: Device) -> tuple[int, dict[str, dict[str, Any]]]:
    """The director targets' version and each app's signed custom field, as the device gets them."""
    response = fleet.device_call(device.identity, "GET", "/tuf/director/targets.json")
    assert response.status_code == 200, response.text
    signed = Metadata.from_bytes(response.content).signed
    return signed.version, {path.split("/")[0]: t.custom["edgefleet"] for path, t in signed.targets.items()}


def retry(fleet: Fleet, device_id: str, app: str | None = None, token: str | None = None) -> Any:
    body = None if app is None else {"app": app}
    return fleet.call("POST", f"/devices/{device_id}/retry", token, json=body)


def test_retry_bumps_the_generation_in_the_signed_director_targets_and_is_audited(
    fleet: Fleet, publisher: Publisher, tmp_path: Path
) -> None:
    device = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    assert assign(fleet, device.id, "analytics@2.0.0").status_code == 200
    version, custom = director_custom(fleet, device)
    assert (custom["sensor"]["retry"], custom["analytics"]["retry"]) == (0, 0)
    etag = fleet.device_call(device.identity, "GET", "/device/target").headers["etag"]

    response = retry(fleet, device.id, "sensor")
    assert response.status_code == 200, response.text
    assert [(a["app"], a["version"], a["retry"]) for a in response.json()] == [("sensor", "1.0.0", 1)]
    bumped_version, custom = director_custom(fleet, device)
    assert bumped_version == version + 1
    assert (custom["sensor"]["retry"], custom["analytics"]["retry"]) == (1, 0)

    # The target-state hint changes too, so a device's held poll looks again.
    target = fleet.device_call(device.identity, "GET", "/device/target", headers={"If-None-Match": etag})
    assert target.status_code == 200
    assert target.json()["apps"]["sensor"]["retry"] == 1

    assert retry(fleet, device.id, "sensor").json()[0]["retry"] == 2
    assert director_custom(fleet, device)[1]["sensor"]["retry"] == 2
    everything = retry(fleet, device.id)  # no app: every assignment
    assert [(a["app"], a["retry"]) for a in everything.json()] == [("analytics", 1), ("sensor", 3)]
    _, custom = director_custom(fleet, device)
    assert (custom["sensor"]["retry"], custom["analytics"]["retry"]) == (3, 1)

    # The agent's verification sees the generation in the verified director metadata.
    assert device.verifier().assignments()["sensor"].custom.retry == 3

    entries = audit_entries(fleet, "device.retry")
    assert [(e["actor"], e["target"], e["outcome"]) for e in entries] == [
        ("user:admin", f"device:{device.id}", "ok")
    ] * 3
    assert entries[0]["detail"] == {"apps": {"sensor": {"version": "1.0.0", "retry": 1}}}
    assert entries[2]["detail"] == {
        "apps": {"analytics": {"version": "2.0.0", "retry": 1}, "sensor": {"version": "1.0.0", "retry": 3}}
    }
    assert_chain_ok(fleet)

    # A new assignment of the app keeps its generation: it never goes back.
    publisher.publish("sensor", "1.1.0")
    assert assign(fleet, device.id, "sensor@1.1.0").json()["retry"] == 3
    assert director_custom(fleet, device)[1]["sensor"] == {**custom["sensor"], "version": "1.1.0", "release_counter": 2}


def test_retry_of_an_unknown_device_or_app_is_404_and_needs_the_operator_role(
    fleet: Fleet, publisher: Publisher, tmp_path: Path
) -> None:
    device = Device.enroll(fleet, tmp_path)
    before = fleet.counts()
    response = retry(fleet, "00000000-0000-4000-8000-000000000000")
    assert (response.status_code, response.json()["code"]) == (404, "device_not_found")
    response = retry(fleet, device.id)
    assert (response.status_code, response.json()["code"]) == (404, "assignment_not_found")
    assert "assign first" in response.json()["message"]

    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    response = retry(fleet, device.id, "analytics")
    assert (response.status_code, response.json()["code"]) == (404, "assignment_not_found")
    assert "analytics" in response.json()["message"]
    viewer = fleet.operator_token("viewer")
    response = retry(fleet, device.id, "sensor", token=viewer)
    assert (response.status_code, response.json()["code"]) == (403, "insufficient_role")
    for body in ({"app": "Bad App"}, {"app": "sensor", "force": True}, {"app": 5}):
        response = fleet.call("POST", f"/devices/{device.id}/retry", json=body)
        assert (response.status_code, response.json()["code"]) == (422, "invalid_request"), body
    refusals = [e for e in audit_entries(fleet, "device.retry") if e["outcome"].startswith("refused:")]
    assert [e["outcome"] for e in refusals] == [
        "refused:device_not_found",
        "refused:assignment_not_found",
        "refused:assignment_not_found",
        "refused:insufficient_role",
    ]
    assert fleet.counts()["assignments"] == before["assignments"] + 1
    assert director_custom(fleet, device)[1]["sensor"]["retry"] == 0

    assert fleet.call("POST", f"/devices/{device.id}/revoke").status_code == 200
    response = retry(fleet, device.id, "sensor")
    assert (response.status_code, response.json()["code"]) == (409, "device_not_accepted")
