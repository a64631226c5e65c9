"""Hostile and malformed input: every answer is a 4xx with a stable code, and nothing is written."""

from __future__ import annotations

import base64
import json

import pytest

from edgefleet import crypto

pytestmark = pytest.mark.integration

GOOD_CSR = crypto.make_csr(crypto.generate_key())


def assert_refused(fleet, response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"}
    if code is not None:
        assert body["code"] == code


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b'{"token": "x", ', b"\xff\xfe\x00garbage", b"[1,2,3", b'{"a":' * 200],
    ids=["open-brace", "text", "truncated", "binary", "open-array", "deep"],
)
def test_malformed_json_is_400_and_writes_nothing(fleet, raw):
    before = fleet.counts()
    for path in ("/api/v1/enroll", "/api/v1/enrollment-tokens", "/api/v1/users"):
        response = fleet.api.post(
            path, content=raw, headers={"Content-Type": "application/json", "Authorization": f"Bearer {fleet.admin}"}
        )
        assert_refused(fleet, response, 400, "malformed_json")
    assert fleet.counts() == before


def test_oversized_body_is_413_by_declared_length(fleet):
    limit = fleet.hub.settings.max_body_bytes
    body = json.dumps({"token": "x" * limit, "csr": GOOD_CSR, "arch": "amd64"}).encode()
    before = fleet.counts()
    response = fleet.api.post("/api/v1/enroll", content=body, headers={"Content-Type": "application/json"})
    assert_refused(fleet, response, 413, "body_too_large")
    assert fleet.counts() == before


def test_oversized_body_is_413_when_streamed_without_length(fleet):
    limit = fleet.hub.settings.max_body_bytes

    def chunks():
        yield b'{"token": "'
        for _ in range(limit // 1024 + 2):
            yield b"a" * 1024
        yield b'"}'

    response = fleet.api.post("/api/v1/enroll", content=chunks(), headers={"Content-Type": "application/json"})
    assert_refused(fleet, response, 413, "body_too_large")


def test_unknown_fields_wrong_types_and_missing_fields_are_422(fleet):
    token = fleet.enrollment_token()
    before = fleet.counts()
    for body in [
        {"token": token, "csr": GOOD_CSR, "arch": "amd64", "admin": True},
        {"token": token, "csr": GOOD_CSR},
        {"token": 5, "csr": GOOD_CSR, "arch": "amd64"},
        {"token": token, "csr": GOOD_CSR, "arch": "vax"},
        {"token": token, "csr": ["list"], "arch": "amd64"},
        {"token": token, "csr": GOOD_CSR, "arch": "amd64", "hostname": "bad host name"},
        [],
        "string",
        None,
    ]:
        assert_refused(fleet, fleet.api.post("/api/v1/enroll", json=body), 422, "invalid_request")
    assert fleet.counts() == before


@pytest.mark.parametrize(
    "csr",
    [
        "-----BEGIN CERTIFICATE REQUEST-----\n!!!not base64!!!\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.b64encode(b"\x30\x03\x02\x01\x01").decode()
        + "\n-----END CERTIFICATE REQUEST-----\n",
        "no pem at all",
        GOOD_CSR.replace("CERTIFICATE REQUEST", "PUBLIC KEY"),
        crypto.public_key_pem(crypto.generate_key().public_key()),
        "\x00" * 100,
    ],
    ids=["bad-base64", "bad-der", "no-pem", "wrong-label", "public-key", "nul"],
)
def test_invalid_csrs_are_400_invalid_csr_and_spend_nothing(fleet, csr):
    token = fleet.enrollment_token()
    before = fleet.counts()
    response = fleet.api.post("/api/v1/enroll", json={"token": token, "csr": csr, "arch": "amd64"})
    assert_refused(fleet, response, 400, "invalid_csr")
    after = fleet.counts()
    assert after["devices"] == before["devices"]
    assert after["audit_log"] == before["audit_log"] + 1
    assert fleet.call("GET", "/enrollment-tokens").json()[0]["used"] == 0


def test_oversized_fields_are_refused(fleet):
    token = fleet.enrollment_token()
    huge_csr = "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 20_000 + "\n-----END CERTIFICATE REQUEST-----"
    assert_refused(
        fleet,
        fleet.api.post("/api/v1/enroll", json={"token": token, "csr": huge_csr, "arch": "amd64"}),
        422,
        "invalid_request",
    )
    assert_refused(
        fleet, fleet.api.post("/api/v1/enroll", json={"token": "t" * 300, "csr": GOOD_CSR, "arch": "amd64"}), 422
    )
    tags = {f"k{i}": "v" for i in range(65)}
    assert_refused(fleet, fleet.call("POST", "/enrollment-tokens", json={"fleet": "f1", "tags": tags}), 422)
    assert_refused(fleet, fleet.call("POST", "/enrollment-tokens", json={"fleet": "F1 bad"}), 422)
    device = fleet.enroll(token)
    big = {
        "properties": {
            "apps": {f"app{i}": {"services": {"s": {"state": "x" * 60, "image": "x" * 500}}} for i in range(60)}
        }
    }
    assert_refused(
        fleet,
        fleet.device_call(device, "PATCH", f"/devices/{device.device_id}/twin/reported", json=big),
        400,
        "reported_too_large",
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/devices/not-a-uuid",
        "/api/v1/devices/../../etc/passwd",
        "/api/v1/devices?limit=0",
        "/api/v1/devices?limit=abc",
        "/api/v1/devices?status=bogus",
        "/api/v1/audit?before=-1",
        "/api/v1/enrollment-tokens/zz",
        "/api/v1/users/UPPER%20case",
    ],
)
def test_bad_paths_and_queries_are_4xx(fleet, path):
    response = fleet.api.request(
        "DELETE" if "tokens/" in path or "users/" in path else "GET",
        path,
        headers={"Authorization": f"Bearer {fleet.admin}"},
    )
    assert 400 <= response.status_code < 500
    assert response.json()["code"]


def test_unknown_ids_are_404(fleet):
    missing = "00000000-0000-4000-8000-000000000000"
    assert_refused(fleet, fleet.call("GET", f"/devices/{missing}"), 404, "device_not_found")
    assert_refused(fleet, fleet.call("POST", f"/devices/{missing}/accept"), 404, "device_not_found")
    assert_refused(fleet, fleet.call("DELETE", "/enrollment-tokens/0000000000000000"), 404, "token_not_found")
    assert_refused(fleet, fleet.call("DELETE", "/api-tokens/0000000000000000"), 404, "api_token_not_found")
    assert_refused(fleet, fleet.call("GET", "/no/such/route"), 404, "not_found")


def test_bad_token_requests_are_refused(fleet):
    for body, code in [
        ({"fleet": "f1", "uses": 0}, "invalid_request"),
        ({"fleet": "f1", "ttl_seconds": 0}, "invalid_request"),
        ({"fleet": "f1", "ttl_seconds": 400 * 86400}, "invalid_ttl"),
        ({"fleet": "f1", "tags": {"bad key!": "v"}}, "invalid_request"),
    ]:
        response = fleet.call("POST", "/enrollment-tokens", json=body)
        assert 400 <= response.status_code < 500
        assert response.json()["code"] == code, body


def test_duplicate_user_is_409(fleet):
    assert fleet.call("POST", "/users", json={"name": "ann", "role": "viewer"}).status_code == 201
    assert_refused(fleet, fleet.call("POST", "/users", json={"name": "ann", "role": "admin"}), 409, "user_exists")
    assert_refused(fleet, fleet.call("POST", "/users", json={"name": "bob", "role": "root"}), 422)


def test_json_nested_past_the_parsers_limit_is_malformed_json(fleet):
    deep = b"[" * 100_000 + b"]" * 100_000
    fleet_limit = fleet.hub.settings.max_body_bytes
    body = deep[: fleet_limit // 2] + deep[-fleet_limit // 2 :]
    response = fleet.api.post("/api/v1/enroll", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"


def test_json_booleans_are_not_integers_and_strings_are_not_numbers(fleet):
    for body in [
        {"fleet": "f1", "uses": True},
        {"fleet": "f1", "ttl_seconds": "60"},
        {"fleet": "f1", "require_approval": 1},
    ]:
        response = fleet.call("POST", "/enrollment-tokens", json=body)
        assert response.status_code == 422, body
        assert response.json()["code"] == "invalid_request"
