"""The hub publishes its online TUF public keys (for the publisher's root), and they match its private keys."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, SSlibKey

pytestmark = pytest.mark.integration


def test_online_keys_are_public_and_match_the_private_key_files(fleet):
    viewer = fleet.operator_token("viewer")
    response = fleet.call("GET", "/repository/online-keys", viewer)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"director", "snapshot", "timestamp"}
    assert "PRIVATE" not in response.text
    for role, data in body.items():
        keyid = data.pop("keyid")
        public = SSlibKey.from_dict(keyid, dict(data))  # from_dict consumes its argument
        private = load_pem_private_key((fleet.hub.keys.data_dir / "keys" / f"{role}.key").read_bytes(), None)
        signer = CryptoSigner(private, public)
        public.verify_signature(signer.sign(b"root"), b"root")
    assert len({d["keyval"]["public"] for d in body.values()}) == 3


def test_online_keys_need_an_operator_token(fleet):
    assert fleet.api.get("/api/v1/repository/online-keys").status_code == 401
