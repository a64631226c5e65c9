"""Rotating the publisher's root or targets keys: stage new keys, sign the next root, publish, then switch.

Order matters: the new private keys are on disk (pending) before a root naming them is
published; the key directory switches only after the hub accepted that root; a failure
before that discards the pending keys and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from edgefleet.publisher.errors import PublisherError
from edgefleet.publisher.keys import (
    KeyType,
    Role,
    RoleKeys,
    commit_rotation,
    discard_rotation,
    load_signers,
    stage_rotation,
)
from edgefleet.publisher.metadata import ROOT_LIFETIME, rotated_root, sign_root
from edgefleet.publisher.state import load_root, resign_targets, save_root

Push = Callable[[Literal["root", "targets"], dict[str, Any]], None]
"""Publishes signed metadata (to the hub); raises `PushRefusedError` when the hub definitely refused."""


class PushRefusedError(PublisherError):
    """The hub answered and refused the metadata (so it does not hold it)."""


@dataclass(frozen=True)
class Rotation:
    role: Role
    keys: RoleKeys
    root_version: int
    targets_version: int | None


def rotate(
    keys_dir: Path,
    role: Role,
    push: Push,
    *,
    now: datetime,
    threshold: int = 1,
    count: int | None = None,
    key_type: KeyType = "ed25519",
    lifetime: timedelta = ROOT_LIFETIME,
) -> Rotation:
    """Replace `role`'s keys. The new root is signed by the old root threshold (and, for root, the new keys).

    For targets, the recorded targets are re-signed with the new keys and pushed as well.

    Raises:
        PublisherError: no recorded root, a pending rotation, or a threshold not met.
        Whatever `push` raises (the rotation is then discarded).
    """
    current = load_root(keys_dir)
    new_keys, new_signers = stage_rotation(keys_dir, role, threshold=threshold, count=count, key_type=key_type)
    try:
        root = rotated_root(current.signed, role, new_keys, now=now, lifetime=lifetime)
        signers = load_signers(keys_dir, "root") + (new_signers if role == "root" else [])
        signed = sign_root(root, signers, trusted=current.signed)
    except BaseException:
        discard_rotation(keys_dir, role)
        raise
    try:
        push("root", signed.to_dict())
    except PushRefusedError:
        discard_rotation(keys_dir, role)  # the hub does not hold this root: the new keys were never trusted
        raise
    except BaseException as exc:
        # Maybe the hub stored the root and only its answer was lost: the new keys may already be
        # the trusted ones, so they stay in KEYS/pending/ for the publisher to check and finish.
        raise PublisherError(
            f"the hub's answer to the new root was lost ({exc}); the new keys stay in {keys_dir / 'pending' / role}: "
            "compare the hub's newest root (GET /api/v1/repository/root) before deciding what to keep"
        ) from exc
    save_root(keys_dir, signed)
    commit_rotation(keys_dir, role, new_keys)
    targets_version = None
    if role == "targets":
        targets = resign_targets(keys_dir, now=now)
        if targets is not None:
            push("targets", targets.to_dict())
            targets_version = targets.signed.version
    return Rotation(role=role, keys=new_keys, root_version=signed.signed.version, targets_version=targets_version)
