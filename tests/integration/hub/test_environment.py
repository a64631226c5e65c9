"""Operator-set environment per fleet and per device, and the desired-vs-reported view, on each backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgefleet.hub.services.environment import MAX_VARIABLES
from tests.conftest import Fleet
from tests.publishing import Publisher, assign

pytestmark = pytest.mark.integration


def env(fleet: Fleet, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
    return fleet.call(method, f"{path}/environment", token, **kwargs)


def test_fleet_values_are_overlaid_by_the_devices_own(fleet: Fleet) -> None:
    device = fleet.enroll().device_id
    here = f"/devices/{device}"
    assert fleet.call("PUT", "/fleets/f1/environment/REGION", json={"value": "eu-west"}).status_code == 200
    assert fleet.call("PUT", "/fleets/f1/environment/MODE", json={"value": "eco"}).status_code == 200
    set_mode = fleet.call("PUT", f"{here}/environment/MODE", json={"value": "turbo = on\nreally"})
    assert set_mode.status_code == 200, set_mode.text
    assert set_mode.json() == {
        "device_id": device,
        "fleet": "f1",
        "environment": {"MODE": "turbo = on\nreally"},
        "fleet_environment": {"MODE": "eco", "REGION": "eu-west"},
        "effective": {"MODE": "turbo = on\nreally", "REGION": "eu-west"},
    }
    assert env(fleet, "GET", here).json() == set_mode.json()
    assert env(fleet, "GET", "/fleets/f1").json() == {
        "fleet": "f1",
        "environment": {"MODE": "eco", "REGION": "eu-west"},
    }
    assert env(fleet, "GET", "/fleets/empty").json() == {"fleet": "empty", "environment": {}}

    unset = fleet.call("DELETE", f"{here}/environment/MODE")
    assert unset.json()["effective"] == {"MODE": "eco", "REGION": "eu-west"}  # the fleet's value applies again

    both = env(fleet, "PATCH", here, json={"set": {"A": "1", "B": ""}})
    assert both.json()["environment"] == {"A": "1", "B": ""}
    swapped = env(fleet, "PATCH", here, json={"set": {"C": "3"}, "unset": ["A", "B"]})
    assert swapped.json()["environment"] == {"C": "3"}
    assert fleet.call("DELETE", "/fleets/f1/environment/REGION").json() == {
        "fleet": "f1",
        "environment": {"MODE": "eco"},
    }

    state = fleet.call("GET", f"{here}/state").json()
    assert state["environment"] == {"C": "3", "MODE": "eco"}


def test_viewers_read_operators_write_devices_neither(fleet: Fleet) -> None:
    local = fleet.enroll()
    device = local.device_id
    viewer = fleet.operator_token("viewer")
    operator = fleet.operator_token("operator")
    for path in (f"/devices/{device}", "/fleets/f1"):
        assert env(fleet, "GET", path, viewer).status_code == 200
        refused = fleet.call("PUT", f"{path}/environment/X", viewer, json={"value": "1"})
        assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_role")
        assert env(fleet, "PATCH", path, viewer, json={"set": {"X": "1"}}).status_code == 403
        assert fleet.call("PUT", f"{path}/environment/X", operator, json={"value": "1"}).status_code == 200
        assert fleet.call("DELETE", f"{path}/environment/X", viewer).status_code == 403
        assert fleet.call("DELETE", f"{path}/environment/X", operator).status_code == 200
        as_device = fleet.device_call(local, "GET", f"{path}/environment")
        assert (as_device.status_code, as_device.json()["code"]) == (401, "operator_token_required")
    assert fleet.call("GET", f"/devices/{device}/state", viewer).status_code == 200


def test_every_change_is_audited_by_name_never_by_value(fleet: Fleet) -> None:
    device = fleet.enroll().device_id
    operator = fleet.operator_token("operator", name="olga")
    viewer = fleet.operator_token("viewer", name="vic")
    assert (
        fleet.call("PUT", "/fleets/f1/environment/API_KEY", operator, json={"value": "s3cr3t-value"}).status_code == 200
    )
    patch = {"set": {"A": "alpha-value"}, "unset": []}
    assert env(fleet, "PATCH", f"/devices/{device}", operator, json=patch).status_code == 200
    assert fleet.call("DELETE", "/fleets/f1/environment/API_KEY", operator).status_code == 200
    assert fleet.call("PUT", "/fleets/f1/environment/B", viewer, json={"value": "x"}).status_code == 403

    entries = [e for e in fleet.call("GET", "/audit").json() if e["action"].endswith(".environment")]
    summary = [(e["actor"], e["action"], e["target"], e["outcome"], e["detail"].get("set")) for e in reversed(entries)]
    assert summary == [
        ("user:olga", "fleet.environment", "fleet:f1", "ok", ["API_KEY"]),
        ("user:olga", "device.environment", f"device:{device}", "ok", ["A"]),
        ("user:olga", "fleet.environment", "fleet:f1", "ok", []),
        ("user:vic", "fleet.environment", "fleet:f1", "refused:insufficient_role", None),
    ]
    assert entries[1]["detail"]["unset"] == ["API_KEY"]
    assert "s3cr3t" not in str(entries)
    assert "alpha-value" not in str(entries)
    assert fleet.call("GET", "/audit/verify").json()["ok"] is True


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("PUT", "/environment/1BAD", {"value": "x"}, 422, "invalid_request"),
        ("PUT", "/environment/A-B", {"value": "x"}, 422, "invalid_request"),
        ("PUT", "/environment/" + "A" * 129, {"value": "x"}, 422, "invalid_request"),
        ("PUT", "/environment/%C3%84", {"value": "x"}, 422, "invalid_request"),
        ("PUT", "/environment/OK", {"value": "x" * 4097}, 422, "invalid_request"),
        ("PUT", "/environment/OK", {"value": 5}, 422, "invalid_request"),
        ("PUT", "/environment/OK", {"value": "x", "secret": True}, 422, "invalid_request"),
        ("PUT", "/environment/OK", {"value": "a\x00b"}, 400, "invalid_value"),
        ("PUT", "/environment/OK?force=1", {"value": "x"}, 400, "unknown_query_parameter"),
        ("PATCH", "/environment", {"set": {"1BAD": "x"}}, 422, "invalid_request"),
        ("PATCH", "/environment", {"set": {f"K{n}": "x" for n in range(129)}}, 422, "invalid_request"),
        ("PATCH", "/environment", {"unset": ["no-dash"]}, 422, "invalid_request"),
        ("PATCH", "/environment", {}, 400, "empty_change"),
        ("PATCH", "/environment", {"set": {"A": "1"}, "unset": ["A"]}, 400, "conflicting_change"),
        ("PATCH", "/environment", {"set": {f"BIG{n}": "x" * 4000 for n in range(5)}}, 400, "environment_too_large"),
        ("PATCH", "/environment", {"set": {"Q": '"' * 4096, "R": '"' * 4096}}, 400, "environment_too_large"),
        ("DELETE", "/environment/NEVER_SET", None, 404, "variable_not_set"),
        ("GET", "/environment?verbose=1", None, 400, "unknown_query_parameter"),
    ],
)
@pytest.mark.parametrize("scope", ["fleet", "device"])
def test_bad_input_is_refused_and_changes_nothing(
    fleet: Fleet, scope: str, method: str, path: str, body: Any, status: int, code: str
) -> None:
    base = "/fleets/f1" if scope == "fleet" else f"/devices/{fleet.enroll().device_id}"
    assert fleet.call("PUT", f"{base}/environment/KEEP", json={"value": "kept"}).status_code == 200
    before = fleet.counts()
    response = fleet.call(method, base + path, json=body)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    after = fleet.counts()
    assert after == {**before, "audit_log": after["audit_log"]}, "a refused change stores nothing"
    assert after["audit_log"] - before["audit_log"] in (0, 1), "at most the refusal is audited"
    shown = env(fleet, "GET", base).json()["environment"]
    assert shown == {"KEEP": "kept"}


def test_unknown_devices_are_404(fleet: Fleet) -> None:
    nobody = "/devices/00000000-0000-4000-8000-000000000000"
    for method, path, body in [
        ("GET", "/environment", None),
        ("PUT", "/environment/A", {"value": "1"}),
        ("PATCH", "/environment", {"set": {"A": "1"}}),
        ("GET", "/state", None),
    ]:
        response = fleet.call(method, nobody + path, json=body)
        assert (response.status_code, response.json()["code"]) == (404, "device_not_found")
    assert fleet.call("GET", "/fleets/Not_A_Fleet/environment").status_code == 422


def test_at_most_128_variables_per_scope_and_per_device(fleet: Fleet) -> None:
    device = f"/devices/{fleet.enroll().device_id}"
    half = {f"FLEET_{n}": "f" for n in range(100)}
    assert env(fleet, "PATCH", "/fleets/f1", json={"set": half}).status_code == 200
    mine = {f"MINE_{n}": "d" for n in range(MAX_VARIABLES - 100)}
    assert env(fleet, "PATCH", device, json={"set": mine}).status_code == 200
    before = fleet.counts()

    one_more = fleet.call("PUT", f"{device}/environment/MINE_X", json={"value": "d"})
    assert (one_more.status_code, one_more.json()["code"]) == (400, "too_many_variables")
    fleet_more = fleet.call("PUT", "/fleets/f1/environment/FLEET_X", json={"value": "f"})
    assert (fleet_more.status_code, fleet_more.json()["code"]) == (400, "too_many_variables")
    assert "a device of fleet f1" in fleet_more.json()["message"]
    after = fleet.counts()
    assert after == {**before, "audit_log": after["audit_log"]}

    # Overriding a fleet value adds nothing to the effective count; another fleet is unaffected.
    assert fleet.call("PUT", f"{device}/environment/FLEET_1", json={"value": "d"}).status_code == 200
    assert fleet.call("DELETE", f"{device}/environment/MINE_0").status_code == 200
    assert fleet.call("PUT", "/fleets/f1/environment/FLEET_X", json={"value": "f"}).status_code == 200
    full = {f"K{n}": "x" for n in range(MAX_VARIABLES)}
    assert env(fleet, "PATCH", "/fleets/other", json={"set": full}).status_code == 200
    too_many = fleet.call("PUT", "/fleets/other/environment/K_EXTRA", json={"value": "x"})
    assert (too_many.status_code, too_many.json()["code"]) == (400, "too_many_variables")
    assert len(env(fleet, "GET", device).json()["effective"]) == MAX_VARIABLES


# --- desired vs reported ------------------------------------------------------------------


def test_state_puts_assignments_beside_what_the_device_reports(fleet: Fleet, tmp_path: Path) -> None:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("sensor", "1.0.0")
    publisher.publish("analytics", "0.3.0")
    local = fleet.enroll()
    device = local.device_id
    assert assign(fleet, device, "sensor@1.0.0").status_code == 200
    assert assign(fleet, device, "analytics@0.3.0").status_code == 200
    reported = {
        "apps": {
            "sensor": {"version": "1.0.0", "services": {"main": {"state": "running", "health": "healthy"}}},
            "analytics": {"version": "0.2.0", "services": "not a dict"},
            "legacy": {"version": 7},
        },
        "last_error": {"app": "analytics", "reason": "hash_mismatch"},
    }
    # The hub refuses such a report (`protocol.ReportedState`); a twin stored before it checked may hold one.
    refused = fleet.device_call(local, "PATCH", f"/devices/{device}/twin/reported", json={"properties": reported})
    assert refused.status_code == 422, refused.text
    with fleet.hub.store.transaction() as tx:
        tx.update_device(device, reported=reported, updated_at=fleet.clock())

    state = fleet.call("GET", f"/devices/{device}/state").json()
    assert state["device_id"] == device
    assert state["status"] == "accepted"
    rows = [(a["app"], a["desired"], a["reported"], a["in_sync"]) for a in state["apps"]]
    assert rows == [
        ("analytics", "0.3.0", "0.2.0", False),
        ("legacy", None, None, False),
        ("sensor", "1.0.0", "1.0.0", True),
    ]
    assert state["apps"][2]["services"] == {"main": {"state": "running", "health": "healthy"}}
    assert state["apps"][0]["services"] == {}
    assert state["last_error"] == {"app": "analytics", "reason": "hash_mismatch"}
    assert state["reported"] == reported

    fresh = fleet.enroll().device_id
    assert fleet.call("GET", f"/devices/{fresh}/state").json()["apps"] == []
    as_device = fleet.device_call(local, "GET", f"/devices/{device}/state")
    assert as_device.status_code == 401
