"""Fixes from review: strict JSON in stored values, NUL in text, races on one device, bounded refusals."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from edgefleet import crypto
from edgefleet.hub.context import RefusalBudget

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "raw",
    [
        '{"properties": {"disk_free": NaN}}',
        '{"properties": {"disk_free": Infinity}}',
        '{"properties": {"disk_free": 1e400}}',
        '{"properties": {"os": "\\ud800"}}',
        '{"properties": {"os": "a\\u0000b"}}',
        '{"properties": {"apps": ' + "[" * 40 + "]" * 40 + "}}",
    ],
    ids=["nan", "infinity", "overflow", "lone-surrogate", "nul", "deep"],
)
def test_reported_values_that_cannot_be_stored_are_refused_and_the_twin_stays_readable(fleet, raw):
    device = fleet.enroll()
    headers = {"Authorization": f"Bearer {device.token(now=fleet.clock())}", "Content-Type": "application/json"}
    response = fleet.api.patch(f"/api/v1/devices/{device.device_id}/twin/reported", content=raw, headers=headers)
    assert response.status_code in (400, 422), response.text  # the JSON, or the schema (`ReportedState`)
    assert response.json()["code"] in {"invalid_json_value", "malformed_json", "invalid_request"}
    twin = fleet.device_call(device, "GET", f"/devices/{device.device_id}/twin")
    assert twin.status_code == 200
    assert twin.json()["reported"] == {}


def test_nul_in_a_description_is_refused_not_a_5xx(fleet):
    fleet.call("POST", "/users", json={"name": "nora", "role": "viewer"})
    response = fleet.call("POST", "/api-tokens", json={"user": "nora", "description": "a\u0000b"})
    assert 400 <= response.status_code < 500
    assert response.json()["code"]


def test_racing_enrollments_with_one_key_and_two_tokens_give_one_device(fleet):
    key = crypto.generate_key()
    csr = crypto.make_csr(key)
    tokens = [fleet.enrollment_token() for _ in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(
            pool.map(
                lambda token: (
                    fleet.api.post("/api/v1/enroll", json={"token": token, "csr": csr, "arch": "amd64"}).status_code
                ),
                tokens,
            )
        )
    assert statuses.count(201) == 1
    assert statuses.count(409) == 5
    assert fleet.counts()["devices"] == 1


def test_concurrent_tag_updates_are_all_kept(fleet):
    device = fleet.enroll()
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(
            pool.map(
                lambda i: fleet.call("PATCH", f"/devices/{device.device_id}/tags", json={"set": {f"k{i}": "v"}}),
                range(12),
            )
        )
    assert set(fleet.call("GET", f"/devices/{device.device_id}").json()["tags"]) == {f"k{i}" for i in range(12)}


KEYS = {"os": "linux", "agent_version": "1.0", "arch": "arm64", "disk_free": 1, "mem_available": 2, "last_error": "e"}


def test_concurrent_reported_patches_are_all_kept(fleet):
    device = fleet.enroll()
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(
            pool.map(
                lambda key, value: fleet.device_call(
                    device, "PATCH", f"/devices/{device.device_id}/twin/reported", json={"properties": {key: value}}
                ),
                *zip(*KEYS.items(), strict=True),
            )
        )
    twin = fleet.device_call(device, "GET", f"/devices/{device.device_id}/twin").json()
    assert twin["reported"] == KEYS


def test_unauthenticated_refusals_are_audited_within_a_budget(fleet):
    budget = RefusalBudget(3)
    object.__setattr__(fleet.hub, "refusal_budget", budget)
    before = fleet.counts()["audit_log"]
    body = {"token": "garbage", "csr": crypto.make_csr(crypto.generate_key()), "arch": "amd64"}
    for _ in range(10):
        assert fleet.api.post("/api/v1/enroll", json=body).json()["code"] == "malformed_enrollment_token"
    assert fleet.counts()["audit_log"] == before + 3
    fleet.clock.advance(__import__("datetime").timedelta(minutes=1))
    fleet.api.post("/api/v1/enroll", json=body)
    newest = fleet.call("GET", "/audit", params={"limit": 1}).json()[0]
    assert newest["detail"]["unaudited_refusals_before"] == 7


def test_renewal_of_a_device_revoked_meanwhile_is_refused(fleet):
    device = fleet.enroll()
    caller_view = fleet.device_call(device, "GET", "/device/self")
    assert caller_view.status_code == 200
    fleet.call("POST", f"/devices/{device.device_id}/revoke")
    response = fleet.device_call(device, "POST", "/device/certificate", json={"csr": crypto.make_csr(device.key)})
    assert response.status_code == 403
    row = fleet.call("GET", f"/devices/{device.device_id}").json()
    assert row["status"] == "revoked"
    assert json.dumps(row)  # still readable
