"""Who may do what: devices only their own records, revocation and expiry at the next request, roles."""

from __future__ import annotations

from datetime import timedelta

import pytest

from edgefleet import crypto
from edgefleet.agent.enroll import renew_if_due

pytestmark = pytest.mark.integration


def test_device_reads_and_writes_only_its_own_twin(fleet):
    a, b = fleet.enroll(), fleet.enroll()
    assert (
        fleet.device_call(
            a, "PATCH", f"/devices/{a.device_id}/twin/reported", json={"properties": {"agent_version": "1.0"}}
        ).status_code
        == 200
    )
    own = fleet.device_call(a, "GET", f"/devices/{a.device_id}/twin")
    assert own.status_code == 200
    assert own.json()["reported"] == {"agent_version": "1.0"}

    read_other = fleet.device_call(a, "GET", f"/devices/{b.device_id}/twin")
    assert read_other.status_code == 403
    assert read_other.json()["code"] == "forbidden_device"
    write_other = fleet.device_call(
        a, "PATCH", f"/devices/{b.device_id}/twin/reported", json={"properties": {"agent_version": "evil"}}
    )
    assert write_other.status_code == 403
    assert fleet.device_call(b, "GET", f"/devices/{b.device_id}/twin").json()["reported"] == {}


def test_device_tokens_do_not_open_operator_endpoints(fleet):
    device = fleet.enroll()
    for method, path in [
        ("GET", "/devices"),
        ("GET", f"/devices/{device.device_id}"),
        ("GET", "/audit"),
        ("POST", "/enrollment-tokens"),
    ]:
        response = fleet.device_call(device, method, path, json={"fleet": "f1"})
        assert response.status_code == 401, path
        assert response.json()["code"] == "operator_token_required"


def test_a_token_signed_by_another_key_is_refused(fleet):
    device = fleet.enroll()
    forged = crypto.mint_device_token(
        crypto.generate_key(), device_id=device.device_id, now=fleet.clock(), lifetime=timedelta(minutes=5)
    )
    response = fleet.api.get("/api/v1/device/self", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_device_token"


def test_expired_and_overlong_device_tokens_are_refused(fleet):
    device = fleet.enroll()
    stale = device.token(now=fleet.clock() - timedelta(minutes=10))
    response = fleet.api.get("/api/v1/device/self", headers={"Authorization": f"Bearer {stale}"})
    assert response.status_code == 401
    long_lived = crypto.mint_device_token(
        device.key, device_id=device.device_id, now=fleet.clock(), lifetime=timedelta(days=1)
    )
    response = fleet.api.get("/api/v1/device/self", headers={"Authorization": f"Bearer {long_lived}"})
    assert response.status_code == 401


def test_revocation_takes_effect_on_the_next_request(fleet):
    device = fleet.enroll()
    assert fleet.device_call(device, "GET", "/device/self").status_code == 200
    assert fleet.call("POST", f"/devices/{device.device_id}/revoke").json()["status"] == "revoked"
    response = fleet.device_call(device, "GET", "/device/self")
    assert response.status_code == 403
    assert response.json()["code"] == "device_revoked"
    entry = fleet.call("GET", "/audit", params={"limit": 1}).json()[0]
    assert (entry["action"], entry["target"]) == ("device.revoke", f"device:{device.device_id}")


def test_expired_certificate_is_refused_and_renewal_before_expiry_extends_it(fleet):
    lifetime = fleet.hub.settings.device_cert_lifetime
    device = fleet.enroll()
    first_expiry = device.identity.certificate_not_after
    fleet.clock.advance(lifetime - timedelta(days=10))
    renewed = renew_if_due(fleet.device_client(), fleet.data_dirs[device.device_id], device, now=fleet.clock())
    assert renewed.identity.certificate_not_after > first_expiry
    assert renewed.identity.certificate != device.identity.certificate

    fleet.clock.advance(lifetime - timedelta(days=1))
    assert fleet.device_call(renewed, "GET", "/device/self").status_code == 200
    fleet.clock.advance(timedelta(days=2))
    response = fleet.device_call(renewed, "GET", "/device/self")
    assert response.status_code == 401
    assert response.json()["code"] == "certificate_expired"


def test_renewal_with_a_new_key_needs_the_old_keys_proof_then_moves_the_identity(fleet):
    device = fleet.enroll()
    new_key = crypto.generate_key("ed25519")
    csr = crypto.make_csr(new_key)
    before = fleet.counts()
    # A replayed bearer token alone cannot move the identity to an attacker's key.
    unproven = fleet.device_call(device, "POST", "/device/certificate", json={"csr": csr})
    assert unproven.status_code == 403
    assert unproven.json()["code"] == "key_change_proof_required"
    other_csr = crypto.make_csr(crypto.generate_key())
    wrong = fleet.device_call(
        device,
        "POST",
        "/device/certificate",
        json={"csr": csr, "key_change_proof": device.key_change_proof(other_csr, now=fleet.clock())},
    )
    assert wrong.json()["code"] == "invalid_key_change_proof"
    bearer_as_proof = fleet.device_call(
        device, "POST", "/device/certificate", json={"csr": csr, "key_change_proof": device.token(now=fleet.clock())}
    )
    assert bearer_as_proof.json()["code"] == "invalid_key_change_proof"
    assert fleet.counts()["devices"] == before["devices"]
    assert fleet.device_call(device, "GET", "/device/self").status_code == 200

    proof = device.key_change_proof(csr, now=fleet.clock())
    answer = fleet.device_call(device, "POST", "/device/certificate", json={"csr": csr, "key_change_proof": proof})
    assert answer.status_code == 200
    assert fleet.device_call(device, "GET", "/device/self").status_code == 401
    from edgefleet.agent.identity import LocalIdentity

    moved = LocalIdentity(key=new_key, identity=device.identity)
    assert fleet.device_call(moved, "GET", "/device/self").status_code == 200


def test_viewer_reads_but_cannot_create_tokens_or_change_devices(fleet):
    viewer = fleet.operator_token("viewer")
    device = fleet.enroll()
    assert fleet.call("GET", "/devices", viewer).status_code == 200
    assert fleet.call("GET", "/audit", viewer).status_code == 200
    before = fleet.counts()
    for method, path, body in [
        ("POST", "/enrollment-tokens", {"fleet": "f1"}),
        ("PATCH", f"/devices/{device.device_id}/tags", {"set": {"a": "b"}}),
        ("POST", f"/devices/{device.device_id}/revoke", None),
    ]:
        response = fleet.call(method, path, viewer, json=body)
        assert response.status_code == 403, path
        assert response.json()["code"] == "insufficient_role"
    after = fleet.counts()
    assert after["enrollment_tokens"] == before["enrollment_tokens"]
    assert after["audit_log"] == before["audit_log"] + 3  # each refusal is audited
    assert fleet.call("GET", f"/devices/{device.device_id}").json()["status"] == "accepted"


def test_operator_manages_devices_but_not_users(fleet):
    operator = fleet.operator_token("operator")
    assert fleet.call("POST", "/enrollment-tokens", operator, json={"fleet": "f1"}).status_code == 201
    for method, path, body in [
        ("POST", "/users", {"name": "mallory", "role": "admin"}),
        ("GET", "/users", None),
        ("POST", "/api-tokens", {"user": "admin"}),
        ("GET", "/api-tokens", None),
        ("DELETE", "/users/admin", None),
    ]:
        response = fleet.call(method, path, operator, json=body)
        assert response.status_code == 403, path
        assert response.json()["code"] == "insufficient_role"
    assert [u["name"] for u in fleet.call("GET", "/users").json()] == sorted(
        u["name"] for u in fleet.call("GET", "/users").json()
    )
    assert "mallory" not in {u["name"] for u in fleet.call("GET", "/users").json()}


def test_operators_cannot_forge_reported_properties(fleet):
    device = fleet.enroll()
    response = fleet.call("PATCH", f"/devices/{device.device_id}/twin/reported", json={"properties": {"disk_free": 1}})
    assert response.status_code == 403
    assert response.json()["code"] == "device_only"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer ", "Basic abc", "Bearer efa_nope", "Bearer a.b.c"])
def test_missing_or_garbage_credentials_are_401(fleet, header):
    headers = {} if header is None else {"Authorization": header}
    response = fleet.api.get("/api/v1/devices", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] in {"missing_credentials", "invalid_api_token", "operator_token_required"}
    assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_and_expired_api_tokens_and_disabled_users_are_refused(fleet):
    operator = fleet.operator_token("operator", name="olga")
    assert fleet.call("GET", "/devices", operator).status_code == 200
    token_id = operator.split("_")[1]
    assert fleet.call("DELETE", f"/api-tokens/{token_id}").json()["revoked_at"]
    assert fleet.call("GET", "/devices", operator).json()["code"] == "api_token_revoked"

    second = fleet.call("POST", "/api-tokens", json={"user": "olga", "ttl_seconds": 60}).json()["token"]
    assert fleet.call("GET", "/devices", second).status_code == 200
    fleet.clock.advance(timedelta(seconds=61))
    assert fleet.call("GET", "/devices", second).json()["code"] == "api_token_expired"

    third = fleet.call("POST", "/api-tokens", json={"user": "olga"}).json()["token"]
    assert fleet.call("DELETE", "/users/olga").json()["disabled_at"]
    assert fleet.call("GET", "/devices", third).json()["code"] == "user_disabled"


def test_api_tokens_are_stored_only_hashed(fleet):
    secret = fleet.operator_token("viewer")
    from sqlalchemy import text

    with fleet.hub.store.engine.connect() as conn:
        dump = " ".join(
            str(r)
            for t in ("api_tokens", "enrollment_tokens", "audit_log")
            for r in conn.execute(text(f"SELECT * FROM {t}"))
        )
    assert secret not in dump
    assert secret.split("_", 2)[2] not in dump
    enrollment = fleet.enrollment_token()
    with fleet.hub.store.engine.connect() as conn:
        dump = " ".join(str(r) for r in conn.execute(text("SELECT * FROM enrollment_tokens")))
    assert enrollment.split("_", 2)[2] not in dump


def test_the_agent_renews_its_certificate_by_itself_in_its_last_30_days_and_keeps_working(fleet):
    from typing import Any, cast

    from edgefleet.agent.identity import load_identity
    from edgefleet.agent.runner import Agent

    lifetime = fleet.hub.settings.device_cert_lifetime
    device = fleet.enroll()
    first = device.identity.certificate_not_after
    data_dir = fleet.data_dirs[device.device_id]
    agent = Agent(
        client=fleet.device_client(),
        identity=device,
        engine=cast(Any, None),  # renewal never touches the engine
        data_dir=data_dir,
        policy=cast(Any, None),
        arch="amd64",
        now=fleet.clock,
    )
    fleet.clock.advance(lifetime - timedelta(days=31))
    agent.renew()
    assert agent.identity is device  # not due yet: nothing sent

    fleet.clock.advance(timedelta(days=2))
    agent.renew()
    assert agent.identity.identity.certificate_not_after > first
    assert load_identity(data_dir).identity.certificate_not_after == agent.identity.identity.certificate_not_after

    fleet.clock.advance(timedelta(days=40))  # past the first certificate's end: the device is still let in
    assert fleet.device_call(agent.identity, "GET", "/device/self").status_code == 200
    entry = fleet.call("GET", "/audit", params={"limit": 1}).json()[0]
    assert entry["target"] == f"device:{device.device_id}"


def test_an_agent_starting_before_the_repository_exists_is_told_what_is_missing(fleet):
    from edgefleet.agent.errors import HubUnreachableError

    device = fleet.enroll()
    with pytest.raises(HubUnreachableError, match=r"no image repository yet: .*edgefleet repo init"):
        fleet.device_client().tuf_roots(device)
