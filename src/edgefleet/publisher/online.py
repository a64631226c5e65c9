"""The publisher's half of a hub key rotation: the next image-repository root names the hub's new online keys.

After `edgefleet hub keys rotate` replaced the hub's snapshot or timestamp key, only a root
signed by the publisher's root keys can tell devices to trust the new key (and so to drop
the snapshot and timestamp metadata the old one signed: fast-forward attack recovery).

Order as in `rotation`: sign, push, then record in the key directory. When the hub's answer
to the push was lost, the next run finds the hub holding the root this directory would sign
next (checked with the recorded root's keys, never taken on the hub's word) and records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from securesystemslib.signer import Key
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root

from edgefleet.publisher.errors import AnswerLostError, PublisherError
from edgefleet.publisher.keys import load_signers
from edgefleet.publisher.metadata import ONLINE_ROLES, ROOT_LIFETIME, names_online_keys, sign_root, with_online_keys
from edgefleet.publisher.rotation import Push, PushRefusedError
from edgefleet.publisher.state import load_root, save_root

Outcome = Literal["pushed", "recorded", "unchanged"]


@dataclass(frozen=True)
class OnlineKeysNamed:
    """The root that names the hub's online keys, and how it came to be recorded."""

    root_version: int
    keyids: dict[str, str]
    """Role (snapshot, timestamp) -> the key ID the root names."""
    outcome: Outcome
    """pushed: a new root; recorded: the hub already held it (a lost answer); unchanged: nothing to do."""


def name_online_keys(
    keys_dir: Path,
    online: Mapping[str, Key],
    push: Push,
    *,
    now: datetime,
    hub_root: Metadata[Root] | None = None,
    lifetime: timedelta = ROOT_LIFETIME,
) -> OnlineKeysNamed:
    """Sign and push the next root naming the hub's `online` snapshot and timestamp keys, unless the last one does.

    Args:
        keys_dir: the publisher's key directory (its recorded root is the trusted one).
        online: the hub's current online public keys by role (`GET /repository/online-keys`).
        push: sends the root to the hub.
        now: the one clock reading for this run.
        hub_root: the hub's newest root, to recognise one pushed by a run whose answer was lost.
        lifetime: how long the new root stays valid.

    Raises:
        PublisherError: no recorded root, online keys missing, or the root threshold not met.
        AnswerLostError: the push got no answer (run again: the root is then recorded if the
            hub holds it, or pushed again).
        PushRefusedError: the hub refused the root (nothing is recorded).
    """
    current = load_root(keys_dir)
    missing = [role for role in ONLINE_ROLES if role not in online]
    if missing:
        raise PublisherError(f"the hub named no {' or '.join(missing)} key")
    keyids = {role: online[role].keyid for role in ONLINE_ROLES}
    if names_online_keys(current.signed, online):
        return OnlineKeysNamed(root_version=current.signed.version, keyids=keyids, outcome="unchanged")
    if hub_root is not None and _pushed_before(current.signed, hub_root, online):
        save_root(keys_dir, hub_root)
        return OnlineKeysNamed(root_version=hub_root.signed.version, keyids=keyids, outcome="recorded")
    signed = sign_root(
        with_online_keys(current.signed, online, now=now, lifetime=lifetime),
        load_signers(keys_dir, "root"),
        trusted=current.signed,
    )
    try:
        push("root", signed.to_dict())
    except PushRefusedError:
        raise
    except Exception as exc:  # whatever the transport raised: the hub may have stored the root
        raise AnswerLostError(
            f"the hub's answer to root version {signed.signed.version} was lost ({exc}); run the command again: "
            "it records the root if the hub holds it, or pushes it again"
        ) from exc
    save_root(keys_dir, signed)
    return OnlineKeysNamed(root_version=signed.signed.version, keyids=keyids, outcome="pushed")


def _pushed_before(current: Root, candidate: Metadata[Root], online: Mapping[str, Key]) -> bool:
    """`candidate` is the root this directory would sign now: next version, same publisher keys, our signatures."""
    root = candidate.signed
    if root.version != current.version + 1 or not names_online_keys(root, online):
        return False
    for role in ("root", "targets"):
        if (sorted(root.roles[role].keyids), root.roles[role].threshold) != (
            sorted(current.roles[role].keyids),
            current.roles[role].threshold,
        ):
            return False
    try:
        current.verify_delegate(Root.type, candidate.signed_bytes, candidate.signatures)
        root.verify_delegate(Root.type, candidate.signed_bytes, candidate.signatures)
    except (UnsignedMetadataError, ValueError, KeyError, TypeError):
        return False
    return True
