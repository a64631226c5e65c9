"""Keys, CSRs, certificates and device tokens: accepted types, refusals, and no foreign exceptions."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet import crypto
from edgefleet.errors import InvalidCsrError, InvalidDeviceTokenError, InvalidKeyError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEVICE = "0b6f3f8e-4a8e-4f39-9a55-3b0c6e1d2a10"


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519"])
def test_csr_round_trip_returns_the_same_key(key_type):
    key = crypto.generate_key(key_type)
    public = crypto.load_csr(crypto.make_csr(key))
    assert crypto.key_fingerprint(public) == crypto.key_fingerprint(key.public_key())


def test_p384_keys_are_refused():
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(InvalidKeyError, match="secp384r1"):
        crypto.load_public_key(crypto.public_key_pem(key.public_key()))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000) | st.text(max_size=3000))
def test_csr_parser_raises_only_our_errors(data):
    with pytest.raises((InvalidCsrError, InvalidKeyError)):
        crypto.load_csr(data)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=600))
def test_token_subject_parser_raises_only_our_errors(token):
    with pytest.raises(InvalidDeviceTokenError):
        crypto.device_token_subject(token)


def test_oversized_pem_is_refused_before_parsing():
    with pytest.raises(InvalidCsrError, match="larger than"):
        crypto.load_csr("A" * (crypto.MAX_PEM_BYTES + 1))


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519"])
def test_device_token_verifies_with_its_key_only(key_type):
    key = crypto.generate_key(key_type)
    token = crypto.mint_device_token(key, device_id=DEVICE, now=NOW, lifetime=timedelta(minutes=5))
    assert crypto.device_token_subject(token) == DEVICE
    check = {"device_id": DEVICE, "now": NOW, "max_lifetime": timedelta(minutes=10), "leeway": timedelta(0)}
    assert crypto.verify_device_token(token, key.public_key(), **check)["sub"] == DEVICE
    with pytest.raises(InvalidDeviceTokenError):
        crypto.verify_device_token(token, crypto.generate_key(key_type).public_key(), **check)
    with pytest.raises(InvalidDeviceTokenError, match="subject"):
        crypto.verify_device_token(token, key.public_key(), **{**check, "device_id": "other"})
    with pytest.raises(InvalidDeviceTokenError, match="expired"):
        crypto.verify_device_token(token, key.public_key(), **{**check, "now": NOW + timedelta(minutes=6)})
    with pytest.raises(InvalidDeviceTokenError, match="future"):
        crypto.verify_device_token(token, key.public_key(), **{**check, "now": NOW - timedelta(minutes=1)})
    with pytest.raises(InvalidDeviceTokenError, match="too long"):
        crypto.verify_device_token(token, key.public_key(), **{**check, "max_lifetime": timedelta(minutes=1)})


def test_alg_none_and_hs256_tokens_are_refused():
    import jwt

    key = crypto.generate_key()
    claims = {
        "sub": DEVICE,
        "aud": crypto.DEVICE_TOKEN_AUDIENCE,
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 60,
    }
    check = {"device_id": DEVICE, "now": NOW, "max_lifetime": timedelta(minutes=10), "leeway": timedelta(0)}
    unsigned = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(InvalidDeviceTokenError):
        crypto.verify_device_token(unsigned, key.public_key(), **check)
    # The classic confusion attack: HS256 keyed with the public key's PEM, built by hand.
    import base64
    import hashlib
    import hmac
    import json

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    pem = crypto.public_key_pem(key.public_key()).encode()
    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    hmac_forged = signing_input + "." + b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(InvalidDeviceTokenError):
        crypto.verify_device_token(hmac_forged, key.public_key(), **check)


def test_private_files_are_0600_and_never_overwritten(tmp_path):
    path = tmp_path / "secret.key"
    crypto.write_private_file(path, b"one")
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        crypto.write_private_file(path, b"two")
    assert path.read_bytes() == b"one"
    assert os.listdir(tmp_path) == ["secret.key"]


def test_server_certificate_names_and_usage():
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key = crypto.generate_key()
    ca = crypto.create_ca(ca_key, name="ca", now=NOW, days=10)
    leaf_key = crypto.generate_key()
    leaf = crypto.issue_certificate(
        ca_key=ca_key,
        ca_cert_pem=ca.pem,
        subject_key=leaf_key.public_key(),
        common_name="hub",
        now=NOW,
        lifetime=timedelta(days=1),
        server_names=("hub.example", "127.0.0.1"),
    )
    cert = x509.load_pem_x509_certificate(leaf.pem.encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.pem.encode()))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hub.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
