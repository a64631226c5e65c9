"""The hub's image repository: accepts publisher-signed root metadata, verified against the trusted root.

The first root a repository gets is taken on an admin's word (trust on first use, audited);
every later one must be version + 1 and signed by the threshold of both the current root
and itself, so only the publisher's offline keys can change who is trusted. Every root must
name the hub's own (current) online keys for snapshot and timestamp, or the hub could not serve
it. A root naming other snapshot or timestamp keys than the one before (after `hub keys
rotate`) gets a snapshot and timestamp signed with them in the same transaction, so no device
that fetched the new root meets a timestamp signed by a key it no longer trusts.
"""

from __future__ import annotations

import json
from typing import Any

from securesystemslib.exceptions import FormatError
from tuf.api.exceptions import RepositoryError, UnsignedMetadataError
from tuf.api.metadata import Metadata, Root

from edgefleet.hub import signing
from edgefleet.hub.context import Hub
from edgefleet.hub.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from edgefleet.hub.services import metadata as repo_metadata
from edgefleet.hub.services.audit import record
from edgefleet.hub.services.online_keys import REPOSITORY_ROLES
from edgefleet.hub.services.operators import Operator, authorize, operator_action

MAX_ROOT_VERSION = 1_000_000


def _parse_root(body: dict[str, Any]) -> tuple[Metadata[Root], bytes]:
    """The metadata and its canonical signed bytes, or a 400: everything that can go wrong is input."""
    try:
        metadata = Metadata[Root].from_dict(json.loads(json.dumps(body)))
        if not isinstance(metadata.signed, Root):
            raise BadRequestError("invalid_metadata", "expected root metadata")
        # Canonical JSON has no floats; encoding here turns that into a 400, not a crash later.
        signed_bytes = metadata.signed_bytes
    except (ValueError, KeyError, TypeError, AttributeError, FormatError, RepositoryError) as exc:
        raise BadRequestError("invalid_metadata", f"not TUF root metadata: {str(exc)[:200]}") from exc
    return metadata, signed_bytes


def _check_online_keys(hub: Hub, root: Root) -> None:
    for role in REPOSITORY_ROLES:
        expected = hub.keys.online_public[role]["keyid"]
        if root.roles[role].keyids != [expected] or root.roles[role].threshold != 1:
            raise ConflictError(
                "online_keys_mismatch",
                f"root must name exactly the hub's {role} key {expected} (GET /api/v1/repository/online-keys; "
                "after `hub keys rotate`, `edgefleet repo rotate-online-keys` signs such a root)",
            )


def _online_keyids(root: Root) -> dict[str, list[str]]:
    return {role: sorted(root.roles[role].keyids) for role in REPOSITORY_ROLES}


def push_root(hub: Hub, operator: Operator, body: dict[str, Any]) -> Root:
    """Store a new root version after checking signatures, version, expiry and online keys (admin).

    Raises:
        BadRequestError: not root metadata.
        ForbiddenError: signatures do not meet the new or the current root's threshold.
        ConflictError: wrong version, expired, or online keys that are not the hub's.
    """
    with operator_action(hub, operator, "admin", action="repository.root", target="repository:root") as tx:
        metadata, signed_bytes = _parse_root(body)
        root = metadata.signed
        if not root.consistent_snapshot:
            raise ConflictError("consistent_snapshot_required", "the hub serves consistent snapshots only")
        tx.lock_repository()
        current = tx.latest_metadata("root", for_update=True)
        expected_version = signing.next_version(current)
        if root.version != expected_version or root.version > MAX_ROOT_VERSION:
            raise ConflictError("wrong_version", f"root version must be {expected_version}, got {root.version}")
        if root.is_expired(hub.clock()):
            raise ConflictError("expired", "root metadata has already expired")
        _check_online_keys(hub, root)
        trusted = None if current is None else signing.parse_stored(current[1]).signed
        try:
            root.verify_delegate(Root.type, signed_bytes, metadata.signatures)
            if trusted is not None:
                trusted.verify_delegate(Root.type, signed_bytes, metadata.signatures)
        except (UnsignedMetadataError, ValueError, TypeError, KeyError, FormatError) as exc:
            raise ForbiddenError("signature_threshold", f"root signatures: {exc}") from exc
        stored = signing.to_text(metadata)
        tx.insert_metadata("root", root.version, stored, now=hub.clock())
        detail: dict[str, Any] = {"first": current is None, "root_keyids": sorted(root.roles["root"].keyids)[:16]}
        if trusted is not None and _online_keyids(trusted) != _online_keyids(root):
            detail["online_keyids"] = _online_keyids(root)
            targets = tx.latest_metadata("targets")
            if targets is not None:
                repo_metadata.publish(hub, tx, targets[0])  # signed with the keys this root names
        record(
            hub,
            tx,
            actor=operator.actor,
            action="repository.root",
            target=f"repository:root:{root.version}",
            detail=detail,
        )
    return root


def get_root(hub: Hub, operator: Operator, version: int | None) -> dict[str, Any]:
    """A stored root (the newest when `version` is None), exactly as signed."""
    authorize(operator, "viewer", action="repository.root.get")
    with hub.store.transaction(readonly=True) as tx:
        if version is None:
            latest = tx.latest_metadata("root")
            body = None if latest is None else latest[1]
        else:
            body = tx.get_metadata("root", version)
    if body is None:
        raise NotFoundError("metadata_not_found", "no such root version")
    parsed: dict[str, Any] = json.loads(body)
    return parsed
