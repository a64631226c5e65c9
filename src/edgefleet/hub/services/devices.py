"""Devices: authenticating device requests, the operator's registry actions, and the device twin.

A device authenticates every request with a short-lived token signed by its own key
(see docs/security.md). Its status and certificate are checked on every request, so a
revocation or an expiry takes effect on the very next one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from edgefleet import crypto
from edgefleet.errors import CryptoError
from edgefleet.hub.context import Hub
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

LAST_SEEN_GRANULARITY = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class DeviceCaller:
    """An authenticated device request."""

    device: Device

    @property
    def actor(self) -> str:
        return f"device:{self.device.id}"


def authenticate(hub: Hub, bearer: str, *, allow_unaccepted: bool = False) -> DeviceCaller:
    """Resolve a device token to its device, checking signature, status and certificate expiry.

    Args:
        hub: the hub.
        bearer: the device token from the Authorization header.
        allow_unaccepted: let a pending device through (it may ask whether it was accepted).

    Raises:
        AuthenticationError: malformed or badly signed token, unknown device, expired certificate.
        ForbiddenError: the device is revoked, rejected, or (unless allowed) still pending.
    """
    now = hub.clock()
    try:
        device_id = crypto.device_token_subject(bearer)
    except CryptoError as exc:
        raise AuthenticationError("invalid_device_token", str(exc)) from exc
    with hub.store.transaction(readonly=True) as tx:
        device = tx.get_device(device_id)
        if device is None:
            raise AuthenticationError("unknown_device", "no such device")
        try:
            crypto.verify_device_token(
                bearer,
                crypto.load_public_key(device.public_key_pem),
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
    if device.last_seen_at is None or now - device.last_seen_at > LAST_SEEN_GRANULARITY:
        # Written at most every LAST_SEEN_GRANULARITY, in its own short transaction.
        with hub.store.transaction() as tx:
            device = tx.update_device(device.id, last_seen_at=now)
    return DeviceCaller(device=device)


# --- the device's own view ---------------------------------------------------------------


def renew_certificate(hub: Hub, caller: DeviceCaller, *, csr: str) -> DeviceIdentity:
    """Issue a fresh certificate for an accepted device, optionally for a new key."""
    device = caller.device
    with refusals_audited(hub, actor=caller.actor, action="device.renew", target=caller.actor):
        key = parse_device_csr(csr)
        fingerprint = crypto.key_fingerprint(key)
        cert = issue_device_certificate(hub, device.id, key)
        with hub.store.transaction() as tx:
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


def update_reported(hub: Hub, caller: DeviceCaller | Operator, device_id: str, properties: dict[str, Any]) -> Device:
    """Merge reported properties (a null value deletes a key); only the device itself may write them."""
    if not isinstance(caller, DeviceCaller):
        raise ForbiddenError("device_only", "reported properties are written by the device itself")
    device = _visible_device(hub, caller, device_id)
    merged = {**device.reported, **properties}
    merged = {key: value for key, value in merged.items() if value is not None}
    if len(merged) > 64 or len(json.dumps(merged)) > MAX_REPORTED_BYTES:
        raise BadRequestError("reported_too_large", f"reported properties exceed 64 keys or {MAX_REPORTED_BYTES} bytes")
    with hub.store.transaction() as tx:
        return tx.update_device(device_id, reported=merged, updated_at=hub.clock())


# --- operator actions ----------------------------------------------------------------------


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
        device = tx.get_device(device_id)
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
        device = tx.get_device(device_id)
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
