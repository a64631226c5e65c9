"""The device's identity on disk: its private key (0600, generated here, never sent) and its certificate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from edgefleet import crypto
from edgefleet.agent.errors import IdentityError
from edgefleet.errors import CryptoError
from edgefleet.protocol import DeviceIdentity

KEY_FILE = "device.key"
IDENTITY_FILE = "identity.json"
TOKEN_LIFETIME = timedelta(minutes=5)


@dataclass(frozen=True)
class LocalIdentity:
    """The device key and what the hub said about the device."""

    key: crypto.PrivateKey
    identity: DeviceIdentity | None

    @property
    def device_id(self) -> str:
        if self.identity is None:
            raise IdentityError("device is not enrolled yet")
        return self.identity.device_id

    def token(self, *, now: datetime) -> str:
        """A fresh short-lived token proving possession of the device key."""
        return crypto.mint_device_token(self.key, device_id=self.device_id, now=now, lifetime=TOKEN_LIFETIME)

    def key_change_proof(self, csr: str, *, now: datetime) -> str:
        """A proof, signed by the current key, that it approves moving the identity to the key in `csr`."""
        return crypto.mint_device_token(
            self.key,
            device_id=self.device_id,
            now=now,
            lifetime=TOKEN_LIFETIME,
            audience=crypto.KEY_CHANGE_AUDIENCE,
            extra={"csr_sha256": crypto.csr_digest(csr)},
        )


def load_or_create_key(data_dir: Path, *, key_type: crypto.KeyType = "ecdsa-p256") -> crypto.PrivateKey:
    """The device key from `data_dir`, generated (mode 0600) on first use."""
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        crypto.write_private_file(path, crypto.private_key_pem(crypto.generate_key(key_type)))
    if path.stat().st_mode & 0o077:
        raise IdentityError(f"{path} must have mode 0600")
    try:
        return crypto.load_private_key(path.read_bytes())
    except CryptoError as exc:
        raise IdentityError(f"{path}: {exc}") from exc


def save_identity(data_dir: Path, identity: DeviceIdentity) -> None:
    """Persist what the hub said (device id, certificate, CA bundle), atomically."""
    crypto.write_public_file(data_dir / IDENTITY_FILE, identity.model_dump_json().encode())


def load_identity(data_dir: Path) -> LocalIdentity:
    """The device key plus the saved identity, if the device has enrolled."""
    key = load_or_create_key(data_dir)
    path = data_dir / IDENTITY_FILE
    if not path.exists():
        return LocalIdentity(key=key, identity=None)
    try:
        identity = DeviceIdentity.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise IdentityError(f"{path} is unreadable: {exc}") from exc
    return LocalIdentity(key=key, identity=identity)


def saved_device_id(data_dir: Path) -> str | None:
    """The enrolled device's ID from its saved identity, without touching the key (None before enrolling)."""
    try:
        return DeviceIdentity.model_validate(json.loads((data_dir / IDENTITY_FILE).read_text())).device_id
    except (OSError, ValueError):
        return None
