"""Enrollment against the real API on each database: tokens, CSRs, approval, and what gets audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from edgefleet import crypto
from edgefleet.agent.enroll import refresh
from edgefleet.agent.errors import DeviceNotAcceptedError, HubRefusedError
from edgefleet.agent.identity import KEY_FILE

pytestmark = pytest.mark.integration


def enroll_body(token: str, key: crypto.PrivateKey | None = None, **extra: object) -> dict[str, object]:
    key = key or crypto.generate_key()
    return {"token": token, "csr": crypto.make_csr(key), "arch": "amd64", **extra}


def test_enrolled_device_gets_a_ca_signed_certificate_fleet_and_tags(fleet):
    token = fleet.enrollment_token(fleet="plant-7", tags={"env": "prod", "line": "3"})
    local = fleet.enroll(token)
    identity = local.identity
    assert identity.status == "accepted"
    cert = x509.load_pem_x509_certificate(identity.certificate.encode())
    ca = x509.load_pem_x509_certificate(identity.ca_bundle.encode())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == f"CN={identity.device_id}"
    assert crypto.key_fingerprint(cert.public_key()) == crypto.key_fingerprint(local.key.public_key())

    device = fleet.call("GET", f"/devices/{identity.device_id}").json()
    assert device["fleet"] == "plant-7"
    assert device["tags"] == {"env": "prod", "line": "3"}
    assert device["arch"] == "arm64"
    assert device["status"] == "accepted"


def test_private_key_stays_on_the_device_with_mode_0600(fleet, tmp_path):
    local = fleet.enroll()
    key_files = list(fleet.tmp.glob(f"device-*/{KEY_FILE}"))
    assert len(key_files) == 1
    assert key_files[0].stat().st_mode & 0o777 == 0o600
    pem = crypto.private_key_pem(local.key).decode()
    body = pem.split("-----")[2].strip()
    with fleet.hub.store.engine.connect() as conn:
        from sqlalchemy import text

        dump = " ".join(str(row) for row in conn.execute(text("SELECT * FROM devices")))
    assert body[:40] not in dump


def test_ed25519_devices_enroll_too(fleet):
    local = fleet.enroll(key_type="ed25519")
    assert local.identity.status == "accepted"
    assert fleet.device_call(local, "GET", "/device/self").status_code == 200


def test_token_uses_are_counted_and_exhausted_tokens_refused(fleet):
    token = fleet.enrollment_token(uses=2)
    fleet.enroll(token)
    fleet.enroll(token)
    before = fleet.counts()
    response = fleet.api.post("/api/v1/enroll", json=enroll_body(token))
    assert response.status_code == 403
    assert response.json()["code"] == "enrollment_token_exhausted"
    after = fleet.counts()
    assert after["devices"] == before["devices"]
    assert after["audit_log"] == before["audit_log"] + 1
    tokens = fleet.call("GET", "/enrollment-tokens").json()
    assert tokens[0]["used"] == 2


@pytest.mark.parametrize(
    ("setup", "status", "code"),
    [
        ("expired", 403, "enrollment_token_expired"),
        ("revoked", 403, "enrollment_token_revoked"),
        ("malformed", 400, "malformed_enrollment_token"),
        ("unknown", 403, "enrollment_token_invalid"),
    ],
)
def test_unusable_tokens_are_refused_audited_and_write_nothing(fleet, setup, status, code):
    token = fleet.enrollment_token(ttl_seconds=3600)
    if setup == "expired":
        fleet.clock.advance(timedelta(hours=1, seconds=1))
    elif setup == "revoked":
        token_id = token.split("_")[1]
        assert fleet.call("DELETE", f"/enrollment-tokens/{token_id}").status_code == 200
    elif setup == "malformed":
        token = "not-a-token"
    elif setup == "unknown":
        token = token[:-4] + "AAAA"
    before = fleet.counts()
    response = fleet.api.post("/api/v1/enroll", json=enroll_body(token))
    assert response.status_code == status
    assert response.json()["code"] == code
    after = fleet.counts()
    assert after["devices"] == before["devices"]
    assert after["audit_log"] == before["audit_log"] + 1
    entry = fleet.call("GET", "/audit", params={"limit": 1}).json()[0]
    assert entry["action"] == "device.enroll"
    assert entry["outcome"] == f"refused:{code}"[:32]
    assert all(t["used"] == 0 for t in fleet.call("GET", "/enrollment-tokens").json())


def test_bad_csr_is_refused_without_spending_a_use(fleet):
    token = fleet.enrollment_token(uses=1)
    other = crypto.generate_key()
    # A CSR whose signature does not match its key: swap the public key bits.
    good = crypto.make_csr(crypto.generate_key())
    response = fleet.api.post("/api/v1/enroll", json={"token": token, "csr": good[:-80] + good[-40:], "arch": "amd64"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_csr"
    assert fleet.call("GET", "/enrollment-tokens").json()[0]["used"] == 0
    assert fleet.api.post("/api/v1/enroll", json=enroll_body(token, other)).status_code == 201


@pytest.mark.parametrize(
    "key",
    [rsa.generate_private_key(public_exponent=65537, key_size=2048), ec.generate_private_key(ec.SECP384R1())],
    ids=["rsa-2048", "ecdsa-p384"],
)
def test_wrong_key_types_are_refused(fleet, key):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    token = fleet.enrollment_token()
    before = fleet.counts()
    response = fleet.api.post("/api/v1/enroll", json={"token": token, "csr": csr, "arch": "amd64"})
    assert response.status_code == 400
    assert response.json()["code"] == "unsupported_key_type"
    assert fleet.counts()["devices"] == before["devices"]


def test_a_key_enrolls_only_once(fleet):
    key = crypto.generate_key()
    token = fleet.enrollment_token(uses=5)
    assert fleet.api.post("/api/v1/enroll", json=enroll_body(token, key)).status_code == 201
    response = fleet.api.post("/api/v1/enroll", json=enroll_body(token, key))
    assert response.status_code == 409
    assert response.json()["code"] == "key_already_enrolled"


def test_require_approval_keeps_device_pending_until_accepted(fleet):
    token = fleet.enrollment_token(require_approval=True)
    local = fleet.enroll(token)
    assert local.identity.status == "pending"
    assert local.identity.certificate is None
    # A pending device may ask about itself, and nothing else.
    assert fleet.device_call(local, "GET", "/device/self").json()["status"] == "pending"
    twin = fleet.device_call(local, "GET", f"/devices/{local.device_id}/twin")
    assert twin.status_code == 403
    assert twin.json()["code"] == "device_pending"

    accepted = fleet.call("POST", f"/devices/{local.device_id}/accept")
    assert accepted.json()["status"] == "accepted"
    refreshed = refresh(fleet.device_client(), fleet.data_dirs[local.device_id], local)
    assert refreshed.identity.status == "accepted"
    assert refreshed.identity.certificate is not None
    assert fleet.device_call(local, "GET", f"/devices/{local.device_id}/twin").status_code == 200
    actions = [e["action"] for e in fleet.call("GET", "/audit").json()]
    assert "device.accept" in actions


def test_rejected_device_is_refused(fleet):
    local = fleet.enroll(fleet.enrollment_token(require_approval=True))
    assert fleet.call("POST", f"/devices/{local.device_id}/reject").json()["status"] == "rejected"
    with pytest.raises(DeviceNotAcceptedError) as refused:
        fleet.device_client().whoami(local)
    assert refused.value.code == "device_rejected"
    assert not refused.value.retryable
    again = fleet.call("POST", f"/devices/{local.device_id}/accept")
    assert again.status_code == 409


def test_enrollment_is_audited_with_the_token_as_actor(fleet):
    token = fleet.enrollment_token()
    local = fleet.enroll(token)
    entry = fleet.call("GET", "/audit", params={"limit": 1}).json()[0]
    assert entry["action"] == "device.enroll"
    assert entry["outcome"] == "ok"
    assert entry["actor"] == f"enrollment-token:{token.split('_')[1]}"
    assert entry["target"] == f"device:{local.device_id}"


def test_device_library_reports_refusals_as_not_retryable(fleet):
    with pytest.raises(HubRefusedError) as refused:
        fleet.enroll("efe_0000000000000000_" + "A" * 43)
    assert refused.value.code == "enrollment_token_invalid"
    assert not refused.value.retryable
