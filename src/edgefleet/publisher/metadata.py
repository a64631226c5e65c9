"""Image-repository root metadata the publisher signs offline: the first root and each rotation.

Values in, signed `tuf.api.metadata.Metadata` out; no network and no files but the keys the
caller loaded. The hub's online keys are named for snapshot and timestamp, so the hub can
keep those current without ever holding a root or targets key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root

from edgefleet.publisher.errors import PublisherError
from edgefleet.publisher.keys import Role, RoleKeys

ROOT_LIFETIME = timedelta(days=365)
ONLINE_ROLES = ("snapshot", "timestamp")
"""The image repository's roles the hub signs with its online keys."""


class MetadataSigningError(PublisherError):
    """Too few valid signatures to meet a role's threshold."""


def make_root(
    publisher: dict[Role, RoleKeys],
    online: dict[str, Key],
    *,
    now: datetime,
    version: int = 1,
    lifetime: timedelta = ROOT_LIFETIME,
) -> Metadata[Root]:
    """An unsigned root: the publisher's root and targets keys, the hub's snapshot and timestamp keys.

    Args:
        publisher: the publisher's key index (`keys.load_index`).
        online: the hub's online public keys by role (at least "snapshot" and "timestamp").
        now: the one clock reading for this run.
        version: 1 for a new repository; the previous version + 1 when rotating.
        lifetime: how long the root stays valid.
    """
    root = Root(version=version, expires=(now + lifetime).replace(microsecond=0), consistent_snapshot=True)
    for role, keys in publisher.items():
        for key in keys.keys:
            root.add_key(key, role)
        root.roles[role].threshold = keys.threshold
    for online_role in ONLINE_ROLES:
        root.add_key(online[online_role], online_role)
        root.roles[online_role].threshold = 1
    return Metadata(root)


def sign_root(metadata: Metadata[Root], signers: Sequence[Signer], *, trusted: Root | None = None) -> Metadata[Root]:
    """Sign a root with every given signer and check it meets its own threshold (and the trusted one's).

    Args:
        metadata: the root to sign (signatures are appended).
        signers: root key signers; for a rotation, old and new keys together.
        trusted: the root devices trust now; a new root must also meet *its* root threshold.

    Raises:
        MetadataSigningError: a threshold is not met.
    """
    for signer in signers:
        metadata.sign(signer, append=True)
    try:
        metadata.signed.verify_delegate(Root.type, metadata.signed_bytes, metadata.signatures)
        if trusted is not None:
            trusted.verify_delegate(Root.type, metadata.signed_bytes, metadata.signatures)
    except UnsignedMetadataError as exc:
        raise MetadataSigningError(f"root: {exc}") from exc
    return metadata


def rotated_root(
    current: Root,
    role: Role,
    new_keys: RoleKeys,
    *,
    now: datetime,
    lifetime: timedelta = ROOT_LIFETIME,
) -> Metadata[Root]:
    """The next root version: `role` now trusts `new_keys` (and only them); everything else unchanged.

    Sign it with `sign_root(..., trusted=current)`: for a root rotation the old threshold
    and the new keys' threshold must both sign it, so devices that trust `current` accept it.
    """
    return _next_root(current, {role: new_keys}, now=now, lifetime=lifetime)


def with_online_keys(
    current: Root, online: Mapping[str, Key], *, now: datetime, lifetime: timedelta = ROOT_LIFETIME
) -> Metadata[Root]:
    """The next root version naming these hub keys for snapshot and timestamp; everything else unchanged.

    Signed with `sign_root(..., trusted=current)` by the publisher's root keys, it tells
    devices to drop snapshot and timestamp metadata signed by the keys the hub replaced.
    """
    return _next_root(
        current,
        {role: RoleKeys(threshold=1, keys=(online[role],)) for role in ONLINE_ROLES},
        now=now,
        lifetime=lifetime,
    )


def names_online_keys(root: Root, online: Mapping[str, Key]) -> bool:
    """`root` names exactly these keys for snapshot and timestamp."""
    return all(root.roles[role].keyids == [online[role].keyid] for role in ONLINE_ROLES)


def _next_root(current: Root, changes: Mapping[str, RoleKeys], *, now: datetime, lifetime: timedelta) -> Metadata[Root]:
    # to_dict() shares lists with `current`: copy deeply so the trusted root stays as it was.
    root = Root.from_dict(copy.deepcopy(current.to_dict()))
    for role, keys in changes.items():
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        for key in keys.keys:
            root.add_key(key, role)
        root.roles[role].threshold = keys.threshold
    root.version = current.version + 1
    root.expires = (now + lifetime).replace(microsecond=0)
    return Metadata(root)
