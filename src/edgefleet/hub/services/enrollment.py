"""Enrollment: tokens operators hand to devices, and the exchange of a token plus CSR for an identity.

Tokens look like ``efe_<id>_<secret>``, expire, have a use count and carry the fleet and
initial tags. A device proves possession of its key with a CSR; the hub signs a
certificate for it with the fleet CA (at once, or when an operator accepts the device).
Every enrollment, accepted or refused, is audited.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import replace
from datetime import timedelta

from edgefleet import crypto
from edgefleet.errors import InvalidCsrError, InvalidKeyError
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.errors import BadRequestError, ConflictError, EnrollmentRefusedError, NotFoundError
from edgefleet.hub.records import Device, EnrollmentToken
from edgefleet.hub.services.audit import record, refusals_audited
from edgefleet.hub.services.operators import Operator, authorize, hash_secret, operator_action
from edgefleet.protocol import DeviceIdentity, EnrollRequest

ENROLLMENT_TOKEN_PREFIX = "efe_"  # noqa: S105  # a prefix, not a secret
_TOKEN_RE = re.compile(r"^efe_([0-9a-f]{16})_([A-Za-z0-9_\-]{43})$")
ACTIVE_STATUSES = ("pending", "accepted")


def create_token(
    hub: Hub,
    operator: Operator,
    *,
    fleet: str,
    tags: dict[str, str],
    max_uses: int,
    ttl: timedelta,
    require_approval: bool,
) -> tuple[EnrollmentToken, str]:
    """Create an enrollment token (operator or admin); returns metadata and the secret, shown once."""
    with operator_action(hub, operator, "operator", action="token.create", target=f"fleet:{fleet}") as tx:
        if not 1 <= max_uses <= hub.settings.enrollment_token_max_uses:
            raise BadRequestError("invalid_uses", f"uses must be 1..{hub.settings.enrollment_token_max_uses}")
        if not timedelta(0) < ttl <= hub.settings.enrollment_token_max_ttl:
            raise BadRequestError(
                "invalid_ttl", f"ttl must be positive and at most {hub.settings.enrollment_token_max_ttl}"
            )
        now = hub.clock()
        token_id = secrets.token_hex(8)
        secret = f"{ENROLLMENT_TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        token = EnrollmentToken(
            id=token_id,
            fleet=fleet,
            tags=dict(tags),
            max_uses=max_uses,
            used=0,
            require_approval=require_approval,
            created_at=now,
            created_by=operator.user,
            expires_at=now + ttl,
            revoked_at=None,
        )
        tx.insert_enrollment_token(token, token_hash=hash_secret(secret))
        record(
            hub,
            tx,
            actor=operator.actor,
            action="token.create",
            target=f"token:{token_id}",
            detail={"fleet": fleet, "tags": tags, "uses": max_uses, "require_approval": require_approval},
        )
    return token, secret


def list_tokens(hub: Hub, operator: Operator, *, limit: int) -> list[EnrollmentToken]:
    """Enrollment token metadata (any role); secrets are never stored, so never shown."""
    authorize(operator, "viewer", action="token.list")
    with hub.store.transaction(readonly=True) as tx:
        return tx.list_enrollment_tokens(limit=limit)


def revoke_token(hub: Hub, operator: Operator, *, token_id: str) -> EnrollmentToken:
    """Revoke an enrollment token; devices already enrolled with it are unaffected."""
    with operator_action(hub, operator, "operator", action="token.revoke", target=f"token:{token_id}") as tx:
        token = tx.get_enrollment_token(token_id)
        if token is None:
            raise NotFoundError("token_not_found", f"no enrollment token {token_id!r}")
        if token.revoked_at is None:
            now = hub.clock()
            token = replace(token, revoked_at=now)
            tx.revoke_enrollment_token(token_id, now=now)
            record(hub, tx, actor=operator.actor, action="token.revoke", target=f"token:{token_id}")
    return token


def issue_device_certificate(hub: Hub, device_id: str, key: crypto.PublicKey) -> crypto.IssuedCertificate:
    """Sign a client certificate for a device with the fleet CA."""
    return crypto.issue_certificate(
        ca_key=hub.keys.ca_key,
        ca_cert_pem=hub.keys.ca_cert_pem,
        subject_key=key,
        common_name=device_id,
        now=hub.clock(),
        lifetime=hub.settings.device_cert_lifetime,
    )


def parse_device_csr(csr: str) -> crypto.PublicKey:
    """The CSR's key, or a 400 naming what is wrong with it."""
    try:
        return crypto.load_csr(csr)
    except InvalidKeyError as exc:
        raise BadRequestError("unsupported_key_type", str(exc)) from exc
    except InvalidCsrError as exc:
        raise BadRequestError("invalid_csr", str(exc)) from exc


def ensure_key_unused(tx: Tx, fingerprint: str, *, except_device: str | None = None) -> None:
    """Refuse a key that another active device already holds: one key, one identity."""
    holder = tx.find_active_device_by_key(fingerprint, statuses=ACTIVE_STATUSES)
    if holder is not None and holder.id != except_device:
        raise ConflictError("key_already_enrolled", "this key already belongs to an enrolled device")


def identity_of(hub: Hub, device: Device) -> DeviceIdentity:
    """What a device is told about itself."""
    return DeviceIdentity(
        device_id=device.id,
        status=device.status,
        fleet=device.fleet,
        certificate=device.cert_pem if device.status == "accepted" else None,
        certificate_not_after=device.cert_not_after if device.status == "accepted" else None,
        ca_bundle=hub.keys.ca_cert_pem,
    )


def _usable_token(tx: Tx, hub: Hub, secret: str) -> EnrollmentToken:
    if not _TOKEN_RE.fullmatch(secret):
        raise BadRequestError("malformed_enrollment_token", "enrollment token is malformed")
    token = tx.find_enrollment_token(hash_secret(secret))
    if token is None:
        raise EnrollmentRefusedError("enrollment_token_invalid", "enrollment token is not known to this hub")
    if token.revoked_at is not None:
        raise EnrollmentRefusedError("enrollment_token_revoked", "enrollment token has been revoked")
    if token.expires_at <= hub.clock():
        raise EnrollmentRefusedError("enrollment_token_expired", "enrollment token has expired")
    if token.used >= token.max_uses:
        raise EnrollmentRefusedError("enrollment_token_exhausted", "enrollment token has no uses left")
    return token


def _token_actor(secret: str) -> str:
    match = _TOKEN_RE.fullmatch(secret)
    return f"enrollment-token:{match.group(1)}" if match else "anonymous"


def enroll(hub: Hub, request: EnrollRequest) -> DeviceIdentity:
    """Register a device from its CSR and an enrollment token.

    Raises:
        BadRequestError: malformed token, invalid CSR or unsupported key type.
        EnrollmentRefusedError: unknown, revoked, expired or exhausted token.
        ConflictError: the key is already enrolled.
    """
    device_id = str(uuid.uuid4())
    with refusals_audited(
        hub,
        actor=_token_actor(request.token),
        action="device.enroll",
        target=f"device:{device_id}",
        unauthenticated=True,
    ):
        key = parse_device_csr(request.csr)
        fingerprint = crypto.key_fingerprint(key)
        now = hub.clock()
        with hub.store.transaction() as tx:
            token = _usable_token(tx, hub, request.token)
            ensure_key_unused(tx, fingerprint)
            if not tx.consume_enrollment_token(token.id, now=now):
                raise EnrollmentRefusedError("enrollment_token_exhausted", "enrollment token has no uses left")
            cert = None if token.require_approval else issue_device_certificate(hub, device_id, key)
            device = Device(
                id=device_id,
                fleet=token.fleet,
                tags=dict(token.tags),
                status="pending" if token.require_approval else "accepted",
                arch=request.arch,
                hostname=request.hostname,
                public_key_pem=crypto.public_key_pem(key),
                key_fingerprint=fingerprint,
                cert_pem=None if cert is None else cert.pem,
                cert_serial=None if cert is None else format(cert.serial, "x"),
                cert_not_after=None if cert is None else cert.not_after,
                enrollment_token_id=token.id,
                enrolled_at=now,
                updated_at=now,
                last_seen_at=now,
                reported={},
            )
            tx.insert_device(device)
            record(
                hub,
                tx,
                actor=f"enrollment-token:{token.id}",
                action="device.enroll",
                target=f"device:{device_id}",
                detail={"fleet": token.fleet, "status": device.status, "arch": request.arch, "key": fingerprint[:16]},
            )
    return identity_of(hub, device)
