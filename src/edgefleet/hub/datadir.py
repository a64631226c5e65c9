"""The hub's data dir: creating its CA, TLS certificate and online keys, and loading them.

Layout::

    DIR/ca.key ca.crt           fleet CA (signs device and hub certificates)
    DIR/tls.key tls.crt         the hub's HTTPS certificate
    DIR/keys/{director,snapshot,timestamp}.key (.pub)   online TUF signing keys (Ed25519)
    DIR/keys/retired/ROLE/KEYID.key (.pub)              keys `hub keys rotate` replaced (hub.rotation)
    DIR/audit.key               HMAC key sealing the audit chain
    DIR/hub.db                  the SQLite store, unless a database URL is given

Private keys are written with mode 0600, atomically, and never overwritten.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner, SSlibKey

from edgefleet import crypto
from edgefleet.errors import CryptoError
from edgefleet.files import filled_whole
from edgefleet.hub.errors import HubConfigError

ONLINE_ROLES = ("director", "snapshot", "timestamp")
CA_DAYS = 3650
TLS_DAYS = 825
PRIVATE_FILES = ("ca.key", "tls.key", "audit.key", *(f"keys/{role}.key" for role in ONLINE_ROLES))
RETIRED = "retired"
PENDING = "pending"
MAX_RETIRED = 16
"""Retired keys per role a hub loads (and a rotation adds to): keys no root names any more can go."""


@dataclass(frozen=True)
class HubKeys:
    """The key material a running hub needs, loaded once at start."""

    data_dir: Path
    ca_key: crypto.PrivateKey
    ca_cert_pem: str
    audit_key: bytes
    online_public: dict[str, dict[str, Any]]
    """TUF public key (securesystemslib dict form, with "keyid") of each online role."""
    online_signers: dict[str, CryptoSigner]
    """Signer of each online role (director, snapshot, timestamp): its current key."""
    retired_signers: dict[str, dict[str, CryptoSigner]] = field(default_factory=dict)
    """Per role and key ID, the keys `hub keys rotate` replaced: a trusted root may still name them."""

    def held(self, role: str, keyid: str) -> CryptoSigner | None:
        """The signer of `role` with that key ID this hub holds, current or retired; None when it holds none."""
        current = self.online_signers[role]
        if current.public_key.keyid == keyid:
            return current
        return self.retired_signers.get(role, {}).get(keyid)

    @property
    def tls_cert_path(self) -> Path:
        return self.data_dir / "tls.crt"

    @property
    def tls_key_path(self) -> Path:
        return self.data_dir / "tls.key"

    @property
    def ca_path(self) -> Path:
        return self.data_dir / "ca.crt"


def init_data_dir(data_dir: Path, *, hostnames: tuple[str, ...], now: datetime) -> None:
    """Create a new data dir with fresh CA, TLS certificate and online keys.

    Raises:
        HubConfigError: the directory exists and is not empty, or cannot be written (what was
            written is removed again).
    """
    if data_dir.exists() and any(data_dir.iterdir()):
        raise HubConfigError("data_dir_exists", f"{data_dir} already exists and is not empty; refusing to overwrite")
    try:
        with filled_whole(data_dir):
            _write_data_dir(data_dir, hostnames=hostnames, now=now)
    except OSError as exc:
        raise HubConfigError("data_dir_unwritable", f"cannot create {data_dir}: {exc.strerror or exc}") from exc


def _write_data_dir(data_dir: Path, *, hostnames: tuple[str, ...], now: datetime) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)
    (data_dir / "keys").mkdir(mode=0o700)

    ca_key = crypto.generate_key("ecdsa-p256")
    ca = crypto.create_ca(ca_key, name="edgefleet fleet CA", now=now, days=CA_DAYS)
    crypto.write_private_file(data_dir / "ca.key", crypto.private_key_pem(ca_key))
    crypto.write_public_file(data_dir / "ca.crt", ca.pem.encode())

    names = tuple(dict.fromkeys((*hostnames, socket.gethostname(), "localhost", "127.0.0.1")))
    tls_key = crypto.generate_key("ecdsa-p256")
    tls = crypto.issue_certificate(
        ca_key=ca_key,
        ca_cert_pem=ca.pem,
        subject_key=tls_key.public_key(),
        common_name=names[0],
        now=now,
        lifetime=timedelta(days=TLS_DAYS),
        server_names=names,
    )
    crypto.write_private_file(data_dir / "tls.key", crypto.private_key_pem(tls_key))
    crypto.write_public_file(data_dir / "tls.crt", (tls.pem + ca.pem).encode())

    for role in ONLINE_ROLES:
        key = crypto.generate_key("ed25519")
        crypto.write_private_file(data_dir / "keys" / f"{role}.key", crypto.private_key_pem(key))
        crypto.write_public_file(data_dir / "keys" / f"{role}.pub", crypto.public_key_pem(key.public_key()).encode())

    crypto.write_private_file(data_dir / "audit.key", secrets.token_hex(32).encode())
    # An empty file is a valid new SQLite database; creating it here fixes its mode (and its WAL's).
    crypto.write_private_file(data_dir / "hub.db", b"")


def load_keys(data_dir: Path) -> HubKeys:
    """Load and check the data dir's key material, retired online keys included.

    Raises:
        HubConfigError: a file is missing, unreadable, too open (not 0600) or malformed; too many
            retired keys; or a key rotation was interrupted (run it again to finish it).
    """
    if not (data_dir / "ca.key").exists():
        raise HubConfigError("data_dir_missing", f"{data_dir} is not a hub data dir: run `edgefleet hub init` first")
    if (data_dir / "keys" / PENDING).exists():
        raise HubConfigError(
            "rotation_unfinished",
            f"a key rotation was interrupted ({data_dir / 'keys' / PENDING} exists): "
            "run the same `edgefleet hub keys rotate` again to finish it",
        )
    retired_paths = {role: _retired_paths(data_dir, role) for role in ONLINE_ROLES}
    for path in (*(data_dir / name for name in PRIVATE_FILES), *(p for ps in retired_paths.values() for p in ps)):
        _check_private(path)
    try:
        ca_key = crypto.load_private_key((data_dir / "ca.key").read_bytes())
        ca_cert_pem = (data_dir / "ca.crt").read_text()
        crypto.load_certificate(ca_cert_pem)
        audit_key = bytes.fromhex((data_dir / "audit.key").read_text().strip())
        online_signers = {role: _signer(data_dir / "keys" / role) for role in ONLINE_ROLES}
        retired_signers = {role: _retired(paths) for role, paths in retired_paths.items()}
    except (OSError, ValueError, CryptoError) as exc:
        raise HubConfigError("key_invalid", f"unusable key material in {data_dir}: {exc}") from exc
    if len(audit_key) < 32:
        raise HubConfigError("key_invalid", "audit.key must hold at least 32 bytes")
    return HubKeys(
        data_dir=data_dir,
        ca_key=ca_key,
        ca_cert_pem=ca_cert_pem,
        audit_key=audit_key,
        online_public={
            role: {"keyid": s.public_key.keyid, **s.public_key.to_dict()} for role, s in online_signers.items()
        },
        online_signers=online_signers,
        retired_signers=retired_signers,
    )


def _check_private(path: Path) -> None:
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise HubConfigError("key_missing", f"cannot read {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise HubConfigError("key_permissions", f"{path} has mode {mode:o}; private keys must be 0600")


def _retired_paths(data_dir: Path, role: str) -> list[Path]:
    directory = data_dir / "keys" / RETIRED / role
    paths = sorted(directory.glob("*.key")) if directory.is_dir() else []
    if len(paths) > MAX_RETIRED:
        raise HubConfigError(
            "too_many_retired_keys",
            f"{directory} holds {len(paths)} keys (at most {MAX_RETIRED}): remove those no root names any more",
        )
    return paths


def _retired(paths: list[Path]) -> dict[str, CryptoSigner]:
    """The retired keys of one role by key ID; each file is named by its key's ID."""
    signers = {}
    for path in paths:
        signer = _signer(path.with_suffix(""))
        if signer.public_key.keyid != path.stem:
            raise ValueError(f"{path} holds key {signer.public_key.keyid}, not the key its name says")
        signers[path.stem] = signer
    return signers


def _signer(stem: Path) -> CryptoSigner:
    try:
        public = SSlibKey.from_crypto(serialization.load_pem_public_key(stem.with_suffix(".pub").read_bytes()))
        private = crypto.load_private_key(stem.with_suffix(".key").read_bytes())
    except (OSError, ValueError, CryptoError) as exc:
        raise ValueError(f"{stem}.key or .pub: {exc}") from exc
    if SSlibKey.from_crypto(private.public_key()).keyid != public.keyid:
        raise ValueError(f"{stem}.key and {stem}.pub do not match")
    return CryptoSigner(private, public)
