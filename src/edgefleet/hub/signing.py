"""TUF metadata the hub signs with its online keys: snapshot, timestamp, and the director's roles.

Pure builders: values and a signer in, the stored JSON text out. The stored text is exactly
what clients download, so lengths and hashes in a timestamp refer to those bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp

from edgefleet.releases import DEVICE_FIELD

DIRECTOR_ROOT_LIFETIME = timedelta(days=365)


@dataclass(frozen=True, slots=True)
class Stored:
    """One signed metadata document as stored and served."""

    version: int
    body: str
    expires: datetime

    @property
    def raw(self) -> bytes:
        return self.body.encode()


def to_text(metadata: Metadata[Any]) -> str:
    """The serialised form the hub stores and serves (compact, sorted keys)."""
    return json.dumps(metadata.to_dict(), sort_keys=True, separators=(",", ":"))


def parse_stored(body: str) -> Metadata[Any]:
    return Metadata.from_bytes(body.encode())


def expiry(now: datetime, lifetime: timedelta) -> datetime:
    return (now + lifetime).replace(microsecond=0)


def next_version(latest: tuple[int, str] | None) -> int:
    """The version after the newest stored one (1 for the first)."""
    return 1 if latest is None else latest[0] + 1


def stale(expires: datetime, now: datetime, lifetime: timedelta) -> bool:
    """True when less than half the lifetime is left: time to sign a fresh version."""
    return expires - now < lifetime / 2


def _sign(signed: Root | Targets | Snapshot | Timestamp, signer: Signer, *more: Signer) -> Stored:
    metadata: Metadata[Any] = Metadata(signed)
    metadata.sign(signer)
    for other in more:
        metadata.sign(other, append=True)
    return Stored(version=signed.version, body=to_text(metadata), expires=signed.expires)


def snapshot(
    targets_version: int,
    *,
    version: int,
    now: datetime,
    lifetime: timedelta,
    signer: Signer,
    roles: Mapping[str, int] | None = None,
) -> Stored:
    """A snapshot naming the targets version and, by name, each delegated role's version."""
    meta = {f"{role}.json": MetaFile(role_version) for role, role_version in sorted((roles or {}).items())}
    meta["targets.json"] = MetaFile(targets_version)
    signed = Snapshot(version=version, expires=expiry(now, lifetime), meta=meta)
    return _sign(signed, signer)


def timestamp(snap: Stored, *, version: int, now: datetime, lifetime: timedelta, signer: Signer) -> Stored:
    """A timestamp naming the snapshot, with its length and hash so a swapped snapshot is caught."""
    meta = MetaFile(snap.version, length=len(snap.raw), hashes={"sha256": hashlib.sha256(snap.raw).hexdigest()})
    signed = Timestamp(version=version, expires=expiry(now, lifetime), snapshot_meta=meta)
    return _sign(signed, signer)


def director_root(
    key: Key, *, version: int, now: datetime, signer: Signer, previous_signers: Sequence[Signer] = ()
) -> Stored:
    """The director repository's root: every role held by the hub's director key.

    After a key rotation `previous_signers` (the key the previous root names) sign it too, so
    devices that trust the previous root accept this one.
    """
    signed = Root(version=version, expires=expiry(now, DIRECTOR_ROOT_LIFETIME), consistent_snapshot=True)
    for role in ("root", "targets", "snapshot", "timestamp"):
        signed.add_key(key, role)
    return _sign(signed, signer, *previous_signers)


def director_targets(
    device_id: str,
    entries: Iterable[TargetFile],
    *,
    version: int,
    now: datetime,
    lifetime: timedelta,
    signer: Signer,
) -> Stored:
    """One device's director targets: exactly what it must run, with its ID inside."""
    signed = Targets(
        version=version,
        expires=expiry(now, lifetime),
        targets={entry.path: entry for entry in entries},
        unrecognized_fields={DEVICE_FIELD: device_id},
    )
    return _sign(signed, signer)


def director_content_of(signed: dict[str, Any]) -> dict[str, Any]:
    """What a device's director targets say (their parsed ``signed``), without version and expiry: to detect changes."""
    return {"targets": signed.get("targets", {}), DEVICE_FIELD: signed.get(DEVICE_FIELD)}


def parse_expires(text: str) -> datetime:
    """A TUF ``expires`` as the hub writes it (``YYYY-MM-DDTHH:MM:SSZ``), as an aware datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
