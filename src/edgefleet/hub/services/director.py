"""The director (Uptane): per-device assignments and the per-device targets metadata that states them.

An operator assigns APP@VERSION to a device (audited). The director's targets for that
device list one manifest target per assigned app, with the image repository's length and
hash and custom fields naming the device, its architecture, the release counter, whether
this is a deliberate rollback, the device's effective environment (so a change of
environment is a new, signed targets version) and the assignment's retry generation (an
operator's retry bumps it, so the device tries again a release that failed there). They
are signed with the hub's online director key and served only to that device; its own ID
is inside, so they cannot be replayed to another.

After `hub keys rotate --role director` the restarted hub signs the next director root with
the old and the new key (`settle_root`), and each device's metadata anew with the new key
when that device next asks: no pass over the fleet.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from datetime import datetime, timedelta

from tuf.api.metadata import Root, TargetFile

from edgefleet.hub import signing
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.devicecache import Currency
from edgefleet.hub.errors import ConflictError, NotFoundError
from edgefleet.hub.records import AssignedBy, Assignment, Device
from edgefleet.hub.services import metadata as repo_metadata
from edgefleet.hub.services import online_keys
from edgefleet.hub.services.audit import record
from edgefleet.hub.services.environment import effective_for
from edgefleet.hub.services.operators import Operator, authorize, operator_action
from edgefleet.protocol import MAX_RETRY
from edgefleet.releases import CUSTOM_KEY, DEVICE_FIELD, DirectorTarget

ROOT_ROLE = repo_metadata.DIRECTOR_ROOT
"""Role name of the director's root in the repository metadata table (shared by all devices)."""
DEVICE_ROLES = ("targets", "snapshot", "timestamp")
MAX_APPS = 64
"""Apps assigned to one device (what the target-state poll may list)."""
ROTATION_ACTOR = "system:hub"
KEPT_FILE_BYTES = 16 * 1024
"""A device's director files up to this size are kept in memory per process (`Hub.director_files`)."""
Files = dict[str, tuple[int, str]]
"""Role -> (version, body) of a device's director metadata."""


def _accepted_device(tx: Tx, device_id: str) -> Device:
    """The device, its row locked for the change.

    Raises:
        NotFoundError: no such device.
        ConflictError: the device is not accepted.
    """
    device = tx.get_device(device_id, for_update=True)
    if device is None:
        raise NotFoundError("device_not_found", "no such device")
    if device.status != "accepted":
        raise ConflictError("device_not_accepted", f"the device is {device.status}")
    return device


def assign(hub: Hub, operator: Operator, device_id: str, *, app: str, version: str, rollback: bool) -> Assignment:
    """Set what `app` on the device must run (operator).

    Raises:
        NotFoundError: no such device or release.
        ConflictError: device not accepted, release withdrawn or without the device's
            architecture, an older release without `rollback`, or one app too many.
    """
    with operator_action(hub, operator, "operator", action="device.assign", target=f"device:{device_id}") as tx:
        device = _accepted_device(tx, device_id)
        release = tx.get_release(app, version)
        if release is None:
            raise NotFoundError("release_not_found", f"no release {app}@{version}")
        if not repo_metadata.is_target(tx, release.manifest_path):
            raise ConflictError("release_withdrawn", f"{app}@{version} is no longer a target of the image repository")
        if device.arch not in release.architectures:
            raise ConflictError(
                "architecture_unsupported",
                f"{app}@{version} has images for {', '.join(release.architectures)}, the device is {device.arch}",
            )
        current = tx.list_assignments(device_id)
        previous = next((a for a in current if a.app == app), None)
        if previous is None and len(current) >= MAX_APPS:
            raise ConflictError("too_many_apps", f"a device runs at most {MAX_APPS} apps")
        older = previous is not None and release.release_counter < previous.release_counter
        if older and not rollback:
            raise ConflictError(
                "rollback_required",
                f"{app}@{version} is older than the assigned {app}@{previous.version if previous else ''}; "
                "assign it as a rollback",
            )
        assignment = Assignment(
            device_id=device_id,
            app=app,
            version=version,
            release_counter=release.release_counter,
            # Asked for explicitly, the mark is signed even when the hub sees nothing newer assigned:
            # the device remembers releases it ran before the app was unassigned, and needs it then.
            rollback=older or rollback,
            assigned_by=AssignedBy.operator(operator.actor),
            assigned_at=hub.clock(),
            retry=0 if previous is None else previous.retry,  # never decreases: the agent compares generations
        )
        tx.put_assignment(assignment)
        record(
            hub,
            tx,
            actor=operator.actor,
            action="device.assign",
            target=f"device:{device_id}",
            detail={
                "app": app,
                "version": version,
                "rollback": older or rollback,
                "previous": None if previous is None else previous.version,
            },
        )
    return assignment


def retry(hub: Hub, operator: Operator, device_id: str, *, app: str | None) -> list[Assignment]:
    """Bump the retry generation of the device's assignments (only `app`'s when given), then re-sign (operator).

    The device tries a release again once its retry generation is new, even where that
    release failed before.

    Raises:
        NotFoundError: no such device, or no assignment (for `app`).
        ConflictError: the device is not accepted, or a generation is at its bound.
    """
    with operator_action(hub, operator, "operator", action="device.retry", target=f"device:{device_id}") as tx:
        device = _accepted_device(tx, device_id)
        chosen = [a for a in tx.list_assignments(device_id) if app is None or a.app == app]
        if not chosen:
            what = "any app" if app is None else app
            raise NotFoundError("assignment_not_found", f"nothing is assigned to {what} on this device; assign first")
        if any(a.retry >= MAX_RETRY for a in chosen):
            raise ConflictError("retry_limit", f"the retry generation is at its bound ({MAX_RETRY})")
        bumped = [replace(a, retry=a.retry + 1) for a in chosen]
        for assignment in bumped:
            tx.put_assignment(assignment)
        record(
            hub,
            tx,
            actor=operator.actor,
            action="device.retry",
            target=f"device:{device_id}",
            detail={"apps": {a.app: {"version": a.version, "retry": a.retry} for a in bumped}},
        )
    refresh(hub, device)
    return bumped


def list_assignments(hub: Hub, operator: Operator, device_id: str) -> list[Assignment]:
    authorize(operator, "viewer", action="device.assignments")
    with hub.store.transaction(readonly=True) as tx:
        if tx.get_device(device_id) is None:
            raise NotFoundError("device_not_found", "no such device")
        return tx.list_assignments(device_id)


# --- director metadata -----------------------------------------------------------------


def _wanted(tx: Tx, device: Device) -> list[TargetFile]:
    entries = []
    environment = effective_for(tx, device)
    for assignment in tx.list_assignments(device.id):
        release = tx.get_release(assignment.app, assignment.version)
        if release is None:  # pragma: no cover - releases are never deleted
            continue
        custom = DirectorTarget(
            app=release.app,
            version=release.version,
            release_counter=release.release_counter,
            device_id=device.id,
            arch=device.arch,
            rollback=assignment.rollback,
            environment=environment,
            retry=assignment.retry,
        )
        entries.append(
            TargetFile(
                length=release.manifest_length,
                hashes={"sha256": release.manifest_sha256},
                path=release.manifest_path,
                unrecognized_fields={"custom": {CUSTOM_KEY: custom.model_dump(mode="json")}},
            )
        )
    return entries


def _director_keyid(hub: Hub) -> str:
    return hub.keys.online_signers["director"].public_key.keyid


def _root_fresh_until(hub: Hub, root: tuple[int, str] | None, now: datetime) -> datetime | None:
    """Until when the newest director root needs no successor; None: now (missing, stale, or another key)."""
    if root is None:
        return None
    signed = _parsed_root(root[1])
    if signing.stale(signed.expires, now, signing.DIRECTOR_ROOT_LIFETIME):
        return None
    if not online_keys.names_only(signed, _director_keyid(hub)):
        return None
    return signed.expires - signing.DIRECTOR_ROOT_LIFETIME / 2


@functools.lru_cache(maxsize=8)
def _parsed_root(body: str) -> Root:
    """A stored director root, parsed once per process (every device's currency check reads the same one).

    Callers only read it.
    """
    root: Root = signing.parse_stored(body).signed
    return root


def _sign_root(hub: Hub, tx: Tx, now: datetime) -> tuple[datetime, int]:
    """The next director root, naming the current key; after a rotation signed by the previous key too (audited).

    Returns until when it needs no successor, and its version.

    Raises:
        UnavailableError: the previous root names a key this process does not hold.
    """
    latest = tx.latest_metadata(ROOT_ROLE)
    previous = None if latest is None else signing.parse_stored(latest[1]).signed
    signer, *previous_signers = online_keys.director_root_signers(hub.keys, previous)
    fresh = signing.director_root(
        signer.public_key,
        version=signing.next_version(latest),
        now=now,
        signer=signer,
        previous_signers=previous_signers,
    )
    tx.insert_metadata(ROOT_ROLE, fresh.version, fresh.body, now=now)
    until = fresh.expires - signing.DIRECTOR_ROOT_LIFETIME / 2
    if previous_signers:
        record(
            hub,
            tx,
            actor=ROTATION_ACTOR,
            action="director.root.rotate",
            target=f"director:root:{fresh.version}",
            detail={"keyid": signer.public_key.keyid, "previous_keyid": previous_signers[0].public_key.keyid},
        )
    return until, fresh.version


def settle_root(hub: Hub) -> None:
    """At start: when the director root names another key than this hub's (`hub keys rotate`), sign the next one now.

    Before any device asks, so none fetches a timestamp signed by a key its root does not
    name yet. Staleness is left to `refresh`, as before.

    Raises:
        UnavailableError: the director root names a key this process does not hold.
    """
    keyid = _director_keyid(hub)

    def rotated(tx: Tx) -> bool:
        latest = tx.latest_metadata(ROOT_ROLE)
        return latest is not None and not online_keys.names_only(signing.parse_stored(latest[1]).signed, keyid)

    with hub.store.transaction(readonly=True) as tx:
        if not rotated(tx):
            return
    with hub.store.transaction() as tx:
        tx.lock_repository()
        if rotated(tx):
            _sign_root(hub, tx, hub.clock())


StoredRoot = tuple[int, str] | None
"""The newest director root as stored (version, body), read once per transaction."""


def _fresh_until(
    hub: Hub, tx: Tx, device: Device, wanted: list[TargetFile], root: StoredRoot
) -> tuple[Currency | None, Files]:
    """Until when the device's director metadata state `wanted` (`_wanted`) and need no re-signing (None: now).

    Also returns the device's newest files (role -> (version, body)), which `_resign` builds on.
    """
    now, settings = hub.clock(), hub.settings
    latest = tx.latest_directors(device.id)
    root_until = _root_fresh_until(hub, root, now)
    if root is None or root_until is None:
        return None, latest
    if any(role not in latest for role in DEVICE_ROLES):
        return None, latest
    # Signed by this hub: read as JSON (once each), not as TUF objects.
    targets, stamp = json.loads(latest["targets"][1]), json.loads(latest["timestamp"][1])
    stated = {entry.path: entry.to_dict() for entry in wanted}
    if signing.director_content_of(targets["signed"]) != {"targets": stated, DEVICE_FIELD: device.id}:
        return None, latest
    keyid = _director_keyid(hub)
    # _resign signs all three together: targets and timestamp tell for the snapshot too.
    if not all([s.get("keyid") for s in doc["signatures"]] == [keyid] for doc in (targets, stamp)):
        return None, latest
    until = _until(
        root_until,
        (signing.parse_expires(targets["signed"]["expires"]), settings.director_lifetime),
        (signing.parse_expires(stamp["signed"]["expires"]), settings.timestamp_lifetime),
        now=now,
    )
    return (None if until is None else Currency(until, root[0])), latest


def _until(root_until: datetime, *signed: tuple[datetime, timedelta], now: datetime) -> datetime | None:
    """The earliest time one of these (expiry, lifetime) needs re-signing; None when one needs it already."""
    if any(signing.stale(expires, now, lifetime) for expires, lifetime in signed):
        return None
    return min(root_until, *(expires - lifetime / 2 for expires, lifetime in signed))


def _resign(
    hub: Hub, tx: Tx, device: Device, wanted: list[TargetFile], latest: Files, root: StoredRoot
) -> tuple[Currency | None, Files]:
    """Sign what is missing or stale: root (shared), then the device's targets (stating `wanted`), snapshot, timestamp.

    `latest` and `root`: the device's newest files and the newest root as read in this transaction.
    Returns until when what it signed is current (as `_fresh_until` would read it back), and
    the files it signed (role -> (version, body)).
    """
    now, settings = hub.clock(), hub.settings
    signer = hub.keys.online_signers["director"]
    root_until = _root_fresh_until(hub, root, now)
    root_version = 0 if root is None else root[0]
    if root_until is None:
        root_until, root_version = _sign_root(hub, tx, now)
    targets = signing.director_targets(
        device.id,
        wanted,
        version=signing.next_version(latest.get("targets")),
        now=now,
        lifetime=settings.director_lifetime,
        signer=signer,
    )
    snap = signing.snapshot(
        targets.version,
        version=signing.next_version(latest.get("snapshot")),
        now=now,
        lifetime=settings.director_lifetime,
        signer=signer,
    )
    stamp = signing.timestamp(
        snap,
        version=signing.next_version(latest.get("timestamp")),
        now=now,
        lifetime=settings.timestamp_lifetime,
        signer=signer,
    )
    signed = {
        role: (stored.version, stored.body) for role, stored in zip(DEVICE_ROLES, (targets, snap, stamp), strict=True)
    }
    tx.insert_directors(device.id, signed, now=now)
    until = _until(
        root_until,
        (targets.expires, settings.director_lifetime),
        (stamp.expires, settings.timestamp_lifetime),
        now=now,
    )
    return (None if until is None else Currency(until, root_version)), signed


def refresh(hub: Hub, device: Device) -> Files:
    """Make the device's director metadata state its current assignments, re-signing when stale.

    This process remembers until when a device's metadata are current, and under which
    director root (`DeviceCaches.directors`); forgotten with the device's other cached
    answers when any hub process changes what it is told (its assignments, environment or
    record). While remembered, a check is one look at the root's version (a root signed by
    another process, e.g. after a key rotation, is announced to nobody): a device fetching
    its metadata during an update is not checked in full again on each file. When the
    device is known to have changed since, the check is made once, in the transaction that
    re-signs if it must (a check outside it first would almost always find them stale).

    Returns the newest files (role -> (version, body)) when it read or signed them, else {}.
    """
    caches = hub.caches
    usable = caches.usable
    if usable:
        held = caches.directors.get(device.id)
        if held is not None and hub.clock() < held.until:
            with hub.store.transaction(readonly=True) as tx:
                if tx.latest_metadata_version(ROOT_ROLE) == held.root_version:
                    return {}
    ticket = caches.directors.ticket()
    current: Currency | None = None
    files: Files = {}
    if not (usable and caches.directors.changed(device.id)):
        with hub.store.transaction(readonly=True) as tx:
            current, files = _fresh_until(hub, tx, device, _wanted(tx, device), tx.latest_metadata(ROOT_ROLE))
    if current is None:
        with hub.store.transaction() as tx:
            tx.lock_repository()
            wanted, root = _wanted(tx, device), tx.latest_metadata(ROOT_ROLE)
            current, files = _fresh_until(hub, tx, device, wanted, root)
            if current is None:
                current, files = _resign(hub, tx, device, wanted, files, root)
    _keep_files(hub, device.id, files)
    if usable and current is not None:
        caches.directors.put(device.id, current, ticket)
    return files


def _file_key(device_id: str, role: str, version: int) -> str:
    return f"{device_id}/{role}/{version}"


def _keep_files(hub: Hub, device_id: str, files: Files) -> None:
    """Keep a device's versioned files (they never change) for the requests of its update that follow."""
    ticket = hub.director_files.ticket()
    for role, (version, body) in files.items():
        raw = body.encode()
        if len(raw) <= KEPT_FILE_BYTES:
            hub.director_files.put(_file_key(device_id, role, version), raw, ticket)


def read(hub: Hub, device: Device, name: str) -> bytes:
    """One director metadata file for this device, by TUF name."""
    match = repo_metadata.METADATA_NAME.fullmatch(name)
    if match is None:
        raise NotFoundError("metadata_not_found", "no such metadata file")
    role, version = match["role"], match["version"]
    if role == "timestamp" and version is not None:
        raise NotFoundError("metadata_not_found", "timestamp.json is never versioned")
    body: bytes | None = None
    if version is None:  # versioned files never change: only the unversioned ones need to be current
        newest = refresh(hub, device).get(role)  # the device's own files (never the shared root)
        body = None if newest is None else newest[1].encode()
    elif role == "root":
        body = repo_metadata.versioned_file(hub, ROOT_ROLE, int(version))
        if body is None:
            raise NotFoundError("metadata_not_found", f"no {name} for this device")
    else:
        body = hub.director_files.get(_file_key(device.id, role, int(version)))
    if body is None:
        body = _stored(hub, device, role, None if version is None else int(version))
    if body is None:
        raise NotFoundError("metadata_not_found", f"no {name} for this device")
    if role == "targets":
        fetched(hub, device)
    return body


def read_held(hub: Hub, device: Device, name: str) -> bytes | None:
    """`read` of a versioned file from this process's memory (no I/O); None: `read` must answer.

    Raises:
        NotFoundError: a director root past the newest one (a TUF client's probe), as `read` would.
    """
    match = repo_metadata.METADATA_NAME.fullmatch(name)
    if match is None or match["version"] is None or match["role"] == "timestamp" or not hub.caches.usable:
        return None  # a versioned timestamp is `read`'s to refuse
    role, version = match["role"], int(match["version"])
    if role == "root":
        return repo_metadata.held_file(hub, ROOT_ROLE, version, missing=f"no {name} for this device")
    body = hub.director_files.get(_file_key(device.id, role, version))
    if body is not None and role == "targets":
        fetched(hub, device)
    return body


def fetched(hub: Hub, device: Device) -> None:
    """The device fetched new targets: what rollouts assigned it is now downloading (written in a batch)."""
    hub.fetches.note(device.id, hub.clock(), recorded=None)


def _stored(hub: Hub, device: Device, role: str, version: int | None) -> bytes | None:
    """A director file as stored (the newest without `version`); the director root is shared by all devices."""
    with hub.store.transaction(readonly=True) as tx:
        if role == "root":
            row = tx.latest_metadata(ROOT_ROLE)
            text = None if row is None else row[1]
        elif version is None:
            latest = tx.latest_director(device.id, role)
            text = None if latest is None else latest[1]
        else:
            text = tx.get_director(device.id, role, version)
    return None if text is None else text.encode()
