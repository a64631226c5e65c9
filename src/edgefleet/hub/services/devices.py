"""Devices: authenticating device requests, the operator's registry actions, and the device twin.

A device authenticates every request with a short-lived token signed by its own key
(see docs/security.md). Its status and certificate are checked on every request, against
the device's record as this process's cache holds it (`hub.devicecache`): a revocation takes
effect on the next request to the process that made it, and on every other process once its
listener hears of it (milliseconds; a process whose listener is not listening uses no cache).
An expiry takes effect on the very next request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgefleet import crypto
from edgefleet.errors import CryptoError
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.db.device_path import DevicePathQueries
from edgefleet.hub.db.token_uses import TokenUses
from edgefleet.hub.devicecache import KnownDevice
from edgefleet.hub.errors import AuthenticationError, BadRequestError, ConflictError, ForbiddenError, NotFoundError
from edgefleet.hub.records import Device
from edgefleet.hub.services.audit import record, refusals_audited
from edgefleet.hub.services.enrollment import (
    ensure_key_unused,
    identity_of,
    issue_device_certificate,
    parse_device_csr,
)
from edgefleet.hub.services.operators import Operator, authorize, operator_action
from edgefleet.protocol import MAX_REPORTED_BYTES, DeviceIdentity

MAX_JTI = 64


@dataclass(frozen=True, slots=True)
class DeviceCaller:
    """An authenticated device request."""

    device: Device
    jti: str | None = None
    """The token's id: each token may make one change (`claim_token`)."""
    token_expires: datetime | None = None

    @property
    def actor(self) -> str:
        return f"device:{self.device.id}"


def forget_expired_tokens(hub: Hub) -> int:
    """Drop the records of spent device tokens that have expired (of devices that went quiet too)."""
    with hub.store.transaction() as tx:
        return TokenUses(tx).prune(now=hub.clock())


def claim_token(hub: Hub, tx: Tx, caller: DeviceCaller) -> None:
    """Spend the caller's token on the change `tx` makes: a token replayed to any hub process is refused.

    Raises:
        AuthenticationError: the token has no usable `jti`, or it already made a change.
    """
    if caller.jti is None or caller.token_expires is None:
        raise AuthenticationError("token_id_required", "a device token that makes a change needs a jti claim")
    _unexpired(hub, caller.token_expires)
    fresh = TokenUses(tx).claim(caller.device.id, caller.jti, expires_at=caller.token_expires)
    if not fresh:
        raise AuthenticationError("token_replayed", "this device token was already used for a change; send a new one")


def claim_token_locking(hub: Hub, tx: Tx, caller: DeviceCaller) -> str | None:
    """The device's status, its row locked until `tx` ends (PostgreSQL), and `claim_token`: one statement there.

    Returns None when the device is gone. A refused status is the caller's to raise, before a
    spent token: `tx` rolls back, so a token refused for the status is not spent.

    Raises:
        AuthenticationError: as `claim_token`.
    """
    if caller.jti is None or caller.token_expires is None or hub.store.dialect != "postgresql":
        status = tx.lock_device_status(caller.device.id)
        if status == "accepted":
            claim_token(hub, tx, caller)
        return status
    status, fresh = DevicePathQueries(tx).claim_locking(
        caller.device.id, jti=caller.jti, token_expires=caller.token_expires
    )
    if status != "accepted":
        return status
    _unexpired(hub, caller.token_expires)  # checked as `claim_token` does: after the status
    if not fresh:
        raise AuthenticationError("token_replayed", "this device token was already used for a change; send a new one")
    return status


def _unexpired(hub: Hub, token_expires: datetime) -> None:
    """A token makes a change only before it expires: after that its first use may have been pruned already."""
    if hub.clock() > token_expires:
        raise AuthenticationError("invalid_device_token", "device token expired (check the device clock)")


def authenticate(hub: Hub, bearer: str, *, allow_unaccepted: bool = False) -> DeviceCaller:
    """Resolve a device token to its device, checking signature, status and certificate expiry (blocking).

    The device's record comes from this process's cache when it holds it (`hub.devicecache`);
    a refusal based on a cached record is checked again against the database.

    Args:
        hub: the hub.
        bearer: the device token from the Authorization header.
        allow_unaccepted: let a pending device through (it may ask whether it was accepted).

    Raises:
        AuthenticationError: malformed or badly signed token, unknown device, expired certificate.
        ForbiddenError: the device is revoked, rejected, or (unless allowed) still pending.
    """
    return admit_cached(hub, bearer, allow_unaccepted=allow_unaccepted) or admit_loaded(
        hub, bearer, allow_unaccepted=allow_unaccepted
    )


def admit_cached(hub: Hub, bearer: str, *, allow_unaccepted: bool = False) -> DeviceCaller | None:
    """`authenticate` from this process's cache (no I/O); None when it holds no record or the record refuses.

    A refusal is not final here: the device may have changed in another process a moment ago,
    so the database decides (`admit_loaded`).
    """
    cached = cached_device(hub, token_subject(bearer))
    if cached is None:
        return None
    try:
        return admit(hub, bearer, cached, allow_unaccepted=allow_unaccepted)
    except (AuthenticationError, ForbiddenError):
        return None


def admit_loaded(hub: Hub, bearer: str, *, allow_unaccepted: bool = False) -> DeviceCaller:
    """`authenticate` against the device's record read from the database (blocking), which the cache then keeps."""
    return admit(hub, bearer, load_device(hub, token_subject(bearer)), allow_unaccepted=allow_unaccepted)


def token_subject(bearer: str) -> str:
    """The device a token claims to come from (not yet verified)."""
    try:
        return crypto.device_token_subject(bearer)
    except CryptoError as exc:
        raise AuthenticationError("invalid_device_token", str(exc)) from exc


def cached_device(hub: Hub, device_id: str) -> KnownDevice | None:
    """The device's record and key from this process's cache, if it holds them fresh and may use them (no I/O)."""
    return hub.caches.devices.get(device_id) if hub.caches.usable else None


def load_device(hub: Hub, device_id: str) -> KnownDevice | None:
    """The device's record from the database (blocking), kept with its parsed key for the next requests."""
    ticket = hub.caches.devices.ticket()
    with hub.store.transaction(readonly=True) as tx:
        device = tx.get_device(device_id)
    if device is None:
        return None
    try:
        known = KnownDevice(device, crypto.load_public_key(device.public_key_pem))
    except CryptoError:
        known = KnownDevice(device, None)
    hub.caches.devices.put(device_id, known, ticket)
    return known


def admit(hub: Hub, bearer: str, known: KnownDevice | None, *, allow_unaccepted: bool = False) -> DeviceCaller:
    """Check a device token against the device's record and key, and note the device as seen (no I/O).

    Raises:
        AuthenticationError: badly signed token, unknown device, expired certificate.
        ForbiddenError: the device is revoked, rejected, or (unless allowed) still pending.
    """
    now = hub.clock()
    if known is None or known.key is None:
        raise AuthenticationError("invalid_device_token", "device token signature or claims invalid")
    device = known.record
    try:
        claims = crypto.verify_device_token(
            bearer,
            known.key,
            device_id=device.id,
            now=now,
            max_lifetime=hub.settings.device_token_max_lifetime,
            leeway=hub.settings.clock_leeway,
        )
    except CryptoError as exc:
        raise AuthenticationError("invalid_device_token", str(exc)) from exc
    if device.status == "revoked":
        raise ForbiddenError("device_revoked", "this device has been revoked")
    if device.status == "rejected":
        raise ForbiddenError("device_rejected", "this device's enrollment was rejected")
    if device.status == "pending" and not allow_unaccepted:
        raise ForbiddenError("device_pending", "this device is waiting for an operator to accept it")
    if device.cert_not_after is not None and device.cert_not_after <= now:
        raise AuthenticationError("certificate_expired", "the device certificate has expired; enroll again")
    hub.last_seen.note(device.id, now, recorded=device.last_seen_at)
    jti = claims.get("jti")
    return DeviceCaller(
        device=device,
        jti=jti if isinstance(jti, str) and 0 < len(jti) <= MAX_JTI else None,
        token_expires=datetime.fromtimestamp(int(claims["exp"]), UTC) + hub.settings.clock_leeway,
    )


# --- the device's own view ---------------------------------------------------------------


def _check_key_change_proof(hub: Hub, device: Device, *, csr: str, proof: str | None) -> None:
    if proof is None:
        raise ForbiddenError("key_change_proof_required", "a CSR for a new key needs a proof signed by the current key")
    try:
        claims = crypto.verify_device_token(
            proof,
            crypto.load_public_key(device.public_key_pem),
            device_id=device.id,
            now=hub.clock(),
            max_lifetime=hub.settings.device_token_max_lifetime,
            leeway=hub.settings.clock_leeway,
            audience=crypto.KEY_CHANGE_AUDIENCE,
        )
    except CryptoError as exc:
        raise ForbiddenError("invalid_key_change_proof", str(exc)) from exc
    if claims.get("csr_sha256") != crypto.csr_digest(csr):
        raise ForbiddenError("invalid_key_change_proof", "the proof names another CSR")


def renew_certificate(hub: Hub, caller: DeviceCaller, *, csr: str, key_change_proof: str | None) -> DeviceIdentity:
    """Issue a fresh certificate for an accepted device, optionally for a new key (with proof)."""
    device = caller.device
    with refusals_audited(hub, actor=caller.actor, action="device.renew", target=caller.actor):
        key = parse_device_csr(csr)
        fingerprint = crypto.key_fingerprint(key)
        if fingerprint != device.key_fingerprint:
            _check_key_change_proof(hub, device, csr=csr, proof=key_change_proof)
        cert = issue_device_certificate(hub, device.id, key)
        with hub.store.transaction() as tx:
            current = tx.get_device(device.id, for_update=True)
            if current is None or current.status != "accepted" or current.key_fingerprint != device.key_fingerprint:
                raise ConflictError("device_changed", "the device was revoked or re-keyed meanwhile")
            claim_token(hub, tx, caller)
            ensure_key_unused(tx, fingerprint, except_device=device.id)
            updated = tx.update_device(
                device.id,
                public_key_pem=crypto.public_key_pem(key),
                key_fingerprint=fingerprint,
                cert_pem=cert.pem,
                cert_serial=format(cert.serial, "x"),
                cert_not_after=cert.not_after,
                updated_at=hub.clock(),
            )
            record(
                hub,
                tx,
                actor=caller.actor,
                action="device.renew",
                target=caller.actor,
                detail={"key_changed": fingerprint != device.key_fingerprint, "not_after": cert.not_after.isoformat()},
            )
    return identity_of(hub, updated)


def _visible_device(hub: Hub, caller: DeviceCaller | Operator, device_id: str) -> Device:
    if isinstance(caller, DeviceCaller):
        if caller.device.id != device_id:
            raise ForbiddenError("forbidden_device", "a device may only access its own records")
        return caller.device
    authorize(caller, "viewer", action="device.show")
    with hub.store.transaction(readonly=True) as tx:
        device = tx.get_device(device_id)
    if device is None:
        raise NotFoundError("device_not_found", f"no device {device_id}")
    return device


def reload(hub: Hub, device_id: str) -> Device:
    """The device's current record (for a long-poll re-check)."""
    with hub.store.transaction(readonly=True) as tx:
        device = tx.get_device(device_id)
    if device is None:
        raise NotFoundError("device_not_found", f"no device {device_id}")
    return device


def twin(hub: Hub, caller: DeviceCaller | Operator, device_id: str) -> Device:
    """The device twin: readable by the device itself and by any operator."""
    return _visible_device(hub, caller, device_id)


def unchanged_by_report(caller: DeviceCaller, device_id: str, properties: dict[str, Any]) -> Device | None:
    """The caller's record when its report would change nothing in it, so nothing is written (pure).

    Compared as canonical JSON: `1` and `true` are the same to Python, not to a reader of the twin.
    """
    device = caller.device
    if device.id != device_id or device.status != "accepted":
        return None
    merged = {key: value for key, value in {**device.reported, **properties}.items() if value is not None}
    if _canonical_json(merged) != _canonical_json(device.reported):
        return None
    return device


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def update_reported(hub: Hub, caller: DeviceCaller | Operator, device_id: str, properties: dict[str, Any]) -> Device:
    """Merge reported properties (a null value deletes a key); only the device itself may write them.

    `properties` passed the schema (`protocol.ReportedState`): bounded, strictly typed, no NUL
    and no lone surrogate, so what PostgreSQL stores is what it can read back.

    On PostgreSQL the change is one statement (token spent, twin compared and set, change
    announced) when the twin is still what the caller's record says; otherwise, and on SQLite,
    the device's row is locked, read and written.
    """
    if not isinstance(caller, DeviceCaller):
        raise ForbiddenError("device_only", "reported properties are written by the device itself")
    _visible_device(hub, caller, device_id)
    if hub.store.dialect == "postgresql" and caller.jti is not None and caller.token_expires is not None:
        quick = _report_in_one_statement(hub, caller, properties, jti=caller.jti, token_expires=caller.token_expires)
        if quick is not None:
            return quick
    with hub.store.transaction() as tx:
        current = tx.get_device(device_id, for_update=True)
        if current is None or current.status != "accepted":
            raise ForbiddenError("device_not_accepted", "this device is no longer accepted")
        claim_token(hub, tx, caller)
        return tx.update_device(device_id, reported=_merged(current.reported, properties), updated_at=hub.clock())


class _StaleRecordError(Exception):
    """The twin or the device changed since the caller's record was read: undo the claim, take the slow path."""


def _report_in_one_statement(
    hub: Hub, caller: DeviceCaller, properties: dict[str, Any], *, jti: str, token_expires: datetime
) -> Device | None:
    """The twin after the report, written in one statement; None when the caller's record is stale."""
    _unexpired(hub, token_expires)
    expected = caller.device.reported
    try:
        with hub.store.transaction() as tx:
            outcome = DevicePathQueries(tx).report(
                caller.device.id,
                jti=jti,
                token_expires=token_expires,
                expected=expected,
                reported=_merged(expected, properties),
                now=hub.clock(),
            )
            if not outcome.claimed:
                raise AuthenticationError(
                    "token_replayed", "this device token was already used for a change; send a new one"
                )
            if outcome.device is None:
                raise _StaleRecordError
            return outcome.device
    except _StaleRecordError:
        return None


def _merged(reported: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """The twin after a report: keys set, nulls deleted; bounded.

    Raises:
        BadRequestError: more than 64 keys or MAX_REPORTED_BYTES.
    """
    merged = {key: value for key, value in {**reported, **properties}.items() if value is not None}
    if len(merged) > 64 or len(json.dumps(merged)) > MAX_REPORTED_BYTES:
        raise BadRequestError("reported_too_large", f"reported properties exceed 64 keys or {MAX_REPORTED_BYTES} bytes")
    return merged


def list_devices(
    hub: Hub, operator: Operator, *, fleet: str | None, status: str | None, after: str | None, limit: int
) -> list[Device]:
    """A page of devices in id order, filtered by fleet and status."""
    authorize(operator, "viewer", action="device.list")
    with hub.store.transaction(readonly=True) as tx:
        return tx.list_devices(fleet=fleet, status=status, after=after, limit=limit)


def show_device(hub: Hub, operator: Operator, device_id: str) -> Device:
    """One device."""
    return _visible_device(hub, operator, device_id)


def tag_device(hub: Hub, operator: Operator, device_id: str, *, set_tags: dict[str, str], remove: list[str]) -> Device:
    """Set and remove tags on a device."""
    with operator_action(hub, operator, "operator", action="device.tag", target=f"device:{device_id}") as tx:
        device = tx.get_device(device_id, for_update=True)
        if device is None:
            raise NotFoundError("device_not_found", f"no device {device_id}")
        tags = {k: v for k, v in device.tags.items() if k not in remove}
        tags.update(set_tags)
        if len(tags) > 64:
            raise BadRequestError("too_many_tags", "a device has at most 64 tags")
        updated = tx.update_device(device_id, tags=tags, updated_at=hub.clock())
        record(
            hub,
            tx,
            actor=operator.actor,
            action="device.tag",
            target=f"device:{device_id}",
            detail={"set": set_tags, "remove": remove},
        )
    return updated


_TRANSITIONS = {
    "accept": (("pending",), "accepted"),
    "reject": (("pending",), "rejected"),
    "revoke": (("pending", "accepted"), "revoked"),
}


def decide(hub: Hub, operator: Operator, device_id: str, verb: str) -> Device:
    """Accept or reject a pending device, or revoke any active one; accepting issues its certificate."""
    allowed_from, to = _TRANSITIONS[verb]
    with operator_action(hub, operator, "operator", action=f"device.{verb}", target=f"device:{device_id}") as tx:
        device = tx.get_device(device_id, for_update=True)
        if device is None:
            raise NotFoundError("device_not_found", f"no device {device_id}")
        if device.status not in allowed_from:
            raise ConflictError(
                f"device_not_{'pending' if verb != 'revoke' else 'active'}",
                f"cannot {verb} a device that is {device.status}",
            )
        values: dict[str, Any] = {"status": to, "updated_at": hub.clock()}
        if verb == "accept":
            cert = issue_device_certificate(hub, device.id, crypto.load_public_key(device.public_key_pem))
            values.update(cert_pem=cert.pem, cert_serial=format(cert.serial, "x"), cert_not_after=cert.not_after)
        updated = tx.update_device(device_id, **values)
        record(
            hub,
            tx,
            actor=operator.actor,
            action=f"device.{verb}",
            target=f"device:{device_id}",
            detail={"from": device.status},
        )
    return updated
