"""Which of the hub's online keys signs each role: the one the newest trusted root names.

After `hub keys rotate` a hub holds new (current) keys and the ones they replaced (retired).
The image repository's root is the publisher's: the hub signs snapshot and timestamp with
the key the newest root names, so devices verify throughout a rotation, and with the new
key from the moment the publisher's root naming it is accepted. The director's root is the
hub's own: when it does not name the current director key, the next version is signed by
both the key it names and the current one (a TUF root rotation devices follow).

A root naming a key this process does not hold means its keys are older than the
database's roots (another replica was restarted with rotated keys, or retired keys were
removed): it refuses to sign (`UnavailableError`) rather than sign what devices would reject.
"""

from __future__ import annotations

from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root

from edgefleet.hub import signing
from edgefleet.hub.context import Hub
from edgefleet.hub.datadir import HubKeys
from edgefleet.hub.errors import HubConfigError, UnavailableError

REPOSITORY_ROLES = ("snapshot", "timestamp")


def _missing(role: str, keyids: list[str], whose: str) -> UnavailableError:
    named = ", ".join(keyids) or "no key"
    return UnavailableError(
        "online_key_missing",
        f"{whose} names {role} key {named}, which this hub process does not hold (neither keys/{role}.key nor "
        f"keys/retired/{role}/): restart it with the data dir `hub keys rotate` changed",
    )


def repository_signer(keys: HubKeys, role: str, root: Root | None) -> CryptoSigner:
    """The signer of the image repository's snapshot or timestamp under `root` (the current key before any root).

    Raises:
        UnavailableError: `root` names no key of `role` this hub holds.
    """
    if root is None:
        return keys.online_signers[role]
    keyids = root.roles[role].keyids
    for keyid in keyids:
        held = keys.held(role, keyid)
        if held is not None:
            return held
    raise _missing(role, keyids, "the image repository's root")


def names_only(root: Root, keyid: str) -> bool:
    """Every role of a director root is held by exactly this key."""
    return all(role.keyids == [keyid] and role.threshold == 1 for role in root.roles.values())


def signed_only_by(metadata: Metadata[Any], keyid: str) -> bool:
    return set(metadata.signatures) == {keyid}


def director_root_signers(keys: HubKeys, previous: Root | None) -> tuple[CryptoSigner, ...]:
    """Who signs the next director root: the current director key, and the key `previous` names if another.

    The new root then meets the threshold of the root devices trust and its own.

    Raises:
        UnavailableError: `previous` names a key this hub does not hold.
    """
    current = keys.online_signers["director"]
    if previous is None or names_only(previous, current.public_key.keyid):
        return (current,)
    keyids = previous.roles[Root.type].keyids
    for keyid in keyids:
        held = keys.held("director", keyid)
        if held is not None:
            return (current,) if held is current else (current, held)
    raise _missing("director", keyids, "the director's root")


def check_held(hub: Hub) -> None:
    """At start: the image repository's newest root names snapshot and timestamp keys this hub holds.

    Raises:
        HubConfigError: it names a key that is neither current nor retired here.
    """
    with hub.store.transaction(readonly=True) as tx:
        latest = tx.latest_metadata("root")
    if latest is None:
        return
    root = signing.parse_stored(latest[1]).signed
    for role in REPOSITORY_ROLES:
        try:
            repository_signer(hub.keys, role, root)
        except UnavailableError as exc:
            raise HubConfigError(exc.code, exc.message) from exc
