"""Serving the image repository at TUF paths, keeping its hub-signed snapshot and timestamp fresh, and its targets.

Paths follow the TUF specification with consistent snapshots, so a stock TUF client works:
``N.root.json``, ``timestamp.json``, ``N.snapshot.json``, ``N.targets.json``, each delegated
role's ``N.ROLE.json`` and targets as ``DIR/SHA256.NAME``. The timestamp (and snapshot) are
re-signed lazily: whoever reads a timestamp with less than half its lifetime left gets a
fresh one, signed under the repository lock so two replicas never sign the same version.

The snapshot lists every delegated role ever stored, revoked ones too: a TUF client refuses a
snapshot that drops a role its previous one listed. Which releases are targets *now* is what
a client would find (`target_roles`): the top-level targets, then the roles they delegate to.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata

from edgefleet.hub import delegation, signing
from edgefleet.hub.artifacts import SHA256_HEX, ArtifactStore
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.errors import AuthenticationError, ForbiddenError, NotFoundError
from edgefleet.hub.records import Device
from edgefleet.hub.services import device_state, online_keys
from edgefleet.hub.services.devices import DeviceCaller
from edgefleet.hub.services.operators import Operator, authorize
from edgefleet.releases import DELEGATED_ROLE_PATTERN, role_name_problem

METADATA_NAME = re.compile(r"^(?:(?P<version>[1-9][0-9]{0,8})\.)?(?P<role>root|snapshot|targets|timestamp)\.json$")
DELEGATED_NAME = re.compile(
    r"^(?:(?P<version>[1-9][0-9]{0,8})\.)?(?P<role>" + DELEGATED_ROLE_PATTERN.strip("^$") + r")\.json$"
)
TARGET_NAME = re.compile(r"^(?P<sha256>[0-9a-f]{64})\.[\w.\-]{1,128}$")

Caller = Operator | DeviceCaller | None
KEPT_FILE_BYTES = 1024 * 1024
"""Versioned files up to this size are kept in memory per process (`Hub.repository_files`); larger ones are read."""
TIMESTAMP_HEAD = "timestamp"
DIRECTOR_ROOT = "director-root"
"""Role name of the director's root in the metadata table (shared by all devices)."""
ROOTS = ("root", DIRECTOR_ROOT)
"""The roles whose newest version `Hub.repository_heads` keeps under their name (for root probes)."""


@dataclass(frozen=True, slots=True)
class _Stamp:
    """The newest snapshot and timestamp as read together, and the timestamp's bytes (`Hub.repository_heads`)."""

    snapshot: tuple[int, str]
    timestamp: tuple[int, str]
    body: bytes


def check_reader(hub: Hub, caller: Caller) -> None:
    """Operators and accepted devices read the image repository; anyone does when it is public."""
    if isinstance(caller, Operator):
        authorize(caller, "viewer", action="repository.read")
    elif caller is None and not hub.settings.public_repository:
        raise AuthenticationError("missing_credentials", "send 'Authorization: Bearer <token>'")


def _signer(hub: Hub, tx: Tx, role: str) -> Signer:
    """The key the newest root names for `role` (after `hub keys rotate`, the old one until the publisher's root)."""
    root = tx.latest_metadata("root")
    return online_keys.repository_signer(hub.keys, role, None if root is None else signing.parse_stored(root[1]).signed)


def delegated_versions(tx: Tx) -> dict[str, int]:
    """The newest stored version of every delegated role (revoked ones too)."""
    return {role: version for role, version in tx.metadata_versions().items() if role_name_problem(role) is None}


def publish(hub: Hub, tx: Tx, targets_version: int) -> None:
    """Sign a snapshot naming `targets_version` (and every delegated role) and a timestamp naming it (lock held)."""
    now = hub.clock()
    snap = signing.snapshot(
        targets_version,
        roles=delegated_versions(tx),
        version=signing.next_version(tx.latest_metadata("snapshot")),
        now=now,
        lifetime=hub.settings.snapshot_lifetime,
        signer=_signer(hub, tx, "snapshot"),
    )
    tx.insert_metadata("snapshot", snap.version, snap.body, now=now)
    _sign_timestamp(hub, tx, snap)


def _sign_timestamp(hub: Hub, tx: Tx, snap: signing.Stored) -> None:
    now = hub.clock()
    stamp = signing.timestamp(
        snap,
        version=signing.next_version(tx.latest_metadata("timestamp")),
        now=now,
        lifetime=hub.settings.timestamp_lifetime,
        signer=_signer(hub, tx, "timestamp"),
    )
    tx.insert_metadata("timestamp", stamp.version, stamp.body, now=now)


def _stale(hub: Hub, tx: Tx) -> tuple[bool, bool]:
    """(snapshot stale, timestamp stale) as of now."""
    latest = tx.latest_metadata_of(("snapshot", "timestamp"))
    return _stale_of(hub, latest.get("snapshot"), latest.get("timestamp"))


def _stale_of(hub: Hub, snap: tuple[int, str] | None, stamp: tuple[int, str] | None) -> tuple[bool, bool]:
    """(snapshot stale, timestamp stale) as of now, of these (version, body)."""
    now = hub.clock()
    if snap is None or stamp is None:
        return False, False
    snap_stale = signing.stale(_expires_of(snap[1]), now, hub.settings.snapshot_lifetime)
    stamp_stale = signing.stale(_expires_of(stamp[1]), now, hub.settings.timestamp_lifetime)
    return snap_stale, stamp_stale


@functools.lru_cache(maxsize=8)
def _expires_of(body: str) -> datetime:
    """When a stored snapshot or timestamp expires, parsed once per process (each version is read by every device)."""
    expires: datetime = signing.parse_stored(body).signed.expires
    return expires


def refresh(hub: Hub) -> None:
    """Re-sign snapshot and timestamp when less than half their lifetime is left."""
    with hub.store.transaction(readonly=True) as tx:
        if not any(_stale(hub, tx)):
            return
    with hub.store.transaction() as tx:
        tx.lock_repository()
        snap_stale, stamp_stale = _stale(hub, tx)
        targets = tx.latest_metadata("targets")
        if snap_stale and targets is not None:
            publish(hub, tx, targets[0])
        elif stamp_stale:
            latest = tx.latest_metadata("snapshot")
            if latest is not None:
                meta = signing.parse_stored(latest[1]).signed
                _sign_timestamp(hub, tx, signing.Stored(latest[0], latest[1], meta.expires))


def read(hub: Hub, caller: Caller, name: str) -> bytes:
    """One metadata file of the image repository by its TUF name."""
    check_reader(hub, caller)
    match = METADATA_NAME.fullmatch(name) or DELEGATED_NAME.fullmatch(name)
    if match is None or (match.re is DELEGATED_NAME and role_name_problem(match["role"]) is not None):
        raise NotFoundError("metadata_not_found", "no such metadata file")
    role, version = match["role"], match["version"]
    if role == "timestamp" and version is not None:
        raise NotFoundError("metadata_not_found", "timestamp.json is never versioned")
    if version is not None:
        return _versioned(hub, role, int(version), name)
    ticket = hub.repository_heads.ticket()
    with hub.store.transaction(readonly=True) as tx:
        if role == "timestamp":  # one statement: whether it needs re-signing, and it
            both = tx.latest_metadata_of(("snapshot", "timestamp"))
            latest = both.get("timestamp")
            stale = any(_stale_of(hub, both.get("snapshot"), latest))
        else:
            stale, latest = False, tx.latest_metadata(role)
    if stale:
        refresh(hub)
        with hub.store.transaction(readonly=True) as tx:
            latest = tx.latest_metadata(role)
    elif role == "timestamp" and latest is not None and (snap := both.get("snapshot")) is not None:
        hub.repository_heads.put(TIMESTAMP_HEAD, _Stamp(snap, latest, latest[1].encode()), ticket)
    if latest is None:
        raise NotFoundError("metadata_not_found", f"no {name} in this repository")
    return latest[1].encode()


def read_held(hub: Hub, name: str) -> bytes | None:
    """`read` for an accepted device from this process's memory (no I/O); None: `read` must answer.

    Raises:
        NotFoundError: a root past the newest one (a TUF client's probe), as `read` would.
    """
    match = METADATA_NAME.fullmatch(name) or DELEGATED_NAME.fullmatch(name)
    if match is None or (match.re is DELEGATED_NAME and role_name_problem(match["role"]) is not None):
        return None
    role, version = match["role"], match["version"]
    if (version is None) != (role == "timestamp"):  # the timestamp, or a versioned file of another role
        return None
    return held_file(hub, role, None if version is None else int(version), missing=f"no {name} in this repository")


def _versioned(hub: Hub, role: str, version: int, name: str) -> bytes:
    """A versioned file: it never changes once stored, so each process reads it from the database once."""
    body = versioned_file(hub, role, version)
    if body is None:
        raise NotFoundError("metadata_not_found", f"no {name} in this repository")
    return body


def versioned_file(hub: Hub, role: str, version: int) -> bytes | None:
    """A stored metadata file by role and version (any role: the director's root too), kept once read.

    When there is no such root, the newest version of that root is kept for `held_file`.
    """
    key = _file_key(role, version)
    held = hub.repository_files.get(key)
    if held is not None:
        return held
    ticket, heads = hub.repository_files.ticket(), hub.repository_heads.ticket()
    with hub.store.transaction(readonly=True) as tx:
        body = tx.get_metadata(role, version)
        newest = tx.latest_metadata_version(role) if body is None and role in ROOTS else None
    if body is None:
        if newest is not None:
            hub.repository_heads.put(role, newest, heads)
        return None
    raw = body.encode()
    if len(raw) <= KEPT_FILE_BYTES:
        hub.repository_files.put(key, raw, ticket)
    return raw


def _file_key(role: str, version: int) -> str:
    return f"file/{role}/{version}"


def held_file(hub: Hub, role: str, version: int | None, *, missing: str) -> bytes | None:
    """What `read` (or the director's) would answer an accepted device from this process's memory; None: read it.

    The timestamp when its newest version is held and needs no re-signing; a versioned file
    when held. A root beyond the newest version held (a TUF client's probe for the next one)
    raises NotFoundError saying `missing`. Only while the device caches may be used: the newest versions are
    forgotten on every process's commit of new metadata, which a listener must hear.
    """
    if not hub.caches.usable:
        return None
    if version is None:
        stamp = hub.repository_heads.get(TIMESTAMP_HEAD) if role == "timestamp" else None
        if stamp is None or any(_stale_of(hub, stamp.snapshot, stamp.timestamp)):
            return None
        body: bytes = stamp.body
        return body
    if role in ROOTS:
        newest = hub.repository_heads.get(role)
        if newest is not None and version > newest:
            raise NotFoundError("metadata_not_found", missing)
    return hub.repository_files.get(_file_key(role, version))


def artifact(hub: Hub, caller: Caller, path: str) -> Path:
    """The file of a target named ``DIR/SHA256.NAME`` (consistent-snapshot form), if the caller may read it.

    A device may fetch only artifacts of releases assigned to it; operators, and anyone when
    the repository is public, may fetch any.
    """
    check_reader(hub, caller)
    match = TARGET_NAME.fullmatch(path.rsplit("/", 1)[-1])
    if match is None or not SHA256_HEX.fullmatch(match["sha256"]):
        raise NotFoundError("artifact_not_found", "targets are fetched as DIR/SHA256.NAME")
    digest = match["sha256"]
    if isinstance(caller, DeviceCaller) and not hub.settings.public_repository:
        with hub.store.transaction(readonly=True) as tx:
            allowed = any(
                release is not None and digest in release.artifacts
                for release in (tx.get_release(a.app, a.version) for a in tx.list_assignments(caller.device.id))
            )
        if not allowed:
            raise ForbiddenError("artifact_not_assigned", "this artifact is not part of a release assigned to you")
    store = ArtifactStore(hub.settings.artifacts_path())
    if store.size(digest) is None:
        raise NotFoundError("artifact_not_found", "no such artifact")
    return store.path(digest)


def held_artifact(hub: Hub, device: Device, path: str) -> Path | None:
    """Where `artifact` would find the file for an accepted device, decided from memory; None: `artifact` decides.

    The device's target answer (`device_state.cached_target_state`) names its assigned
    releases, and the releases this process read name their artifacts; when both are held
    and one of them has this digest, the device may fetch it. Anything else, refusals
    included, is `artifact`'s to decide. Whether the file exists is the server's to find out.
    """
    match = TARGET_NAME.fullmatch(path.rsplit("/", 1)[-1])
    if match is None or not hub.caches.usable:
        return None
    digest = match["sha256"]
    if not hub.settings.public_repository:
        target = device_state.cached_target_state(hub, device.id)
        if target is None:
            return None
        releases = [hub.store.releases.get(app, assigned.version) for app, assigned in target.apps.items()]
        if not any(release is not None and digest in release.artifacts for release in releases):
            return None
    return ArtifactStore(hub.settings.artifacts_path()).path(digest)


def target_roles(tx: Tx, paths: Iterable[str]) -> dict[str, str]:
    """Of `paths`, those a TUF client finds in the image repository now, each with the role that lists it."""
    latest = tx.latest_metadata("targets")
    if latest is None:
        return {}
    top = signing.parse_stored(latest[1]).signed
    loaded: dict[str, Metadata[Any] | None] = {}

    def load(role: str) -> Metadata[Any] | None:
        if role not in loaded:
            row = tx.latest_metadata(role)
            loaded[role] = None if row is None else signing.parse_stored(row[1])
        return loaded[role]

    found = {path: delegation.find(top, path, load) for path in paths}
    return {path: role for path, role in found.items() if role is not None}


def is_target(tx: Tx, path: str) -> bool:
    """Whether a TUF client finds `path` in the image repository now (a withdrawn or revoked release: no)."""
    return path in target_roles(tx, (path,))
