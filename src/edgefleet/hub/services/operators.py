"""Operator identity: users, API tokens, bearer authentication and role checks.

API tokens look like ``efa_<id>_<secret>``; only their SHA-256 is stored (they are 256-bit
random, so a fast hash is enough). A token acts with its user's current role, so demoting
or disabling a user takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.errors import AuthenticationError, BadRequestError, ConflictError, ForbiddenError, NotFoundError
from edgefleet.hub.records import ROLE_RANK, ApiToken, Role, User
from edgefleet.hub.services.audit import record, refusals_audited

API_TOKEN_PREFIX = "efa_"  # noqa: S105  # a prefix, not a secret
_API_TOKEN_RE = re.compile(r"^efa_([0-9a-f]{16})_([A-Za-z0-9_\-]{43})$")
USER_NAME_RE = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")
BOOTSTRAP_ACTOR = "system:hub-init"


@dataclass(frozen=True, slots=True)
class Operator:
    """An authenticated operator: who, with which role, through which token."""

    user: str
    role: Role
    token_id: str

    @property
    def actor(self) -> str:
        return f"user:{self.user}"


def hash_secret(token: str) -> str:
    """SHA-256 hex of a bearer secret, the only form in which secrets are stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(hub: Hub, bearer: str) -> Operator:
    """Resolve an API token to its operator.

    Raises:
        AuthenticationError: malformed, unknown, revoked or expired token, or disabled user.
    """
    if not _API_TOKEN_RE.fullmatch(bearer):
        raise AuthenticationError("invalid_api_token", "malformed API token")
    now = hub.clock()
    with hub.store.transaction(readonly=True) as tx:
        token, user = _valid(tx, tx.find_api_token(hash_secret(bearer)), now=now)
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        # Written at most once a minute, in its own short transaction: reads stay read-only.
        with hub.store.transaction() as tx:
            tx.touch_api_token(token.id, now=now)
    return Operator(user=user.name, role=user.role, token_id=token.id)


def operator_for_token(hub: Hub, token_id: str) -> Operator:
    """The operator an API token acts for now, by the token's id (a dashboard session holds only the id).

    The same checks as `authenticate`, so revoking the token or disabling its user ends the session.

    Raises:
        AuthenticationError: unknown, revoked or expired token, or disabled user.
    """
    with hub.store.transaction(readonly=True) as tx:
        return operator_in(tx, token_id, now=hub.clock())


def operator_in(tx: Tx, token_id: str, *, now: datetime) -> Operator:
    """`operator_for_token` inside a transaction the caller has open (one read for a whole request).

    Raises:
        AuthenticationError: unknown, revoked or expired token, or disabled user.
    """
    token, user = _valid(tx, tx.get_api_token(token_id), now=now)
    return Operator(user=user.name, role=user.role, token_id=token.id)


def _valid(tx: Tx, token: ApiToken | None, *, now: datetime) -> tuple[ApiToken, User]:
    """The token and its user when the token is known, live and its user enabled; else AuthenticationError."""
    if token is None:
        raise AuthenticationError("invalid_api_token", "unknown API token")
    if token.revoked_at is not None:
        raise AuthenticationError("api_token_revoked", "API token has been revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise AuthenticationError("api_token_expired", "API token has expired")
    user = tx.get_user(token.user)
    if user is None or user.disabled_at is not None:
        raise AuthenticationError("user_disabled", f"user {token.user!r} is disabled")
    return token, user


def authorize(operator: Operator, minimum: Role, *, action: str) -> None:
    """Refuse when the operator's role is below `minimum`.

    Raises:
        ForbiddenError: role too low.
    """
    if ROLE_RANK[operator.role] < ROLE_RANK[minimum]:
        raise ForbiddenError("insufficient_role", f"{action} needs the {minimum} role; you are {operator.role}")


@contextmanager
def operator_action(hub: Hub, operator: Operator, minimum: Role, *, action: str, target: str) -> Iterator[Tx]:
    """Run a state-changing action in one transaction: check the role first, audit any refusal."""
    with refusals_audited(hub, actor=operator.actor, action=action, target=target):
        authorize(operator, minimum, action=action)
        with hub.store.transaction() as tx:
            yield tx


def _new_token(tx: Tx, hub: Hub, *, user: str, description: str, ttl: timedelta | None) -> tuple[ApiToken, str]:
    if ttl is not None and not timedelta(0) < ttl <= hub.settings.api_token_max_ttl:
        raise BadRequestError("invalid_ttl", f"ttl must be positive and at most {hub.settings.api_token_max_ttl}")
    now = hub.clock()
    token_id = secrets.token_hex(8)
    secret = f"{API_TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    token = ApiToken(
        id=token_id,
        user=user,
        description=description,
        created_at=now,
        expires_at=None if ttl is None else now + ttl,
        revoked_at=None,
        last_used_at=None,
    )
    tx.insert_api_token(token, token_hash=hash_secret(secret))
    return token, secret


def bootstrap_admin(hub: Hub, *, name: str = "admin") -> str:
    """Create the first admin user and token (hub init); returns the token, shown once.

    Raises:
        ConflictError: users already exist.
    """
    with hub.store.transaction() as tx:
        if tx.count_users():
            raise ConflictError("already_bootstrapped", "this database already has users")
        tx.insert_user(User(name=name, role="admin", created_at=hub.clock(), disabled_at=None))
        token, secret = _new_token(tx, hub, user=name, description="created by hub init", ttl=None)
        record(hub, tx, actor=BOOTSTRAP_ACTOR, action="user.create", target=f"user:{name}", detail={"role": "admin"})
        record(
            hub,
            tx,
            actor=BOOTSTRAP_ACTOR,
            action="apitoken.create",
            target=f"apitoken:{token.id}",
            detail={"user": name},
        )
    return secret


def create_user(hub: Hub, operator: Operator, *, name: str, role: Role) -> User:
    """Create an operator account (admin only)."""
    with operator_action(hub, operator, "admin", action="user.create", target=f"user:{name}") as tx:
        if not USER_NAME_RE.fullmatch(name):
            raise BadRequestError("invalid_name", "user names are lowercase letters, digits, '_', '.', '-' (max 64)")
        user = User(name=name, role=role, created_at=hub.clock(), disabled_at=None)
        tx.insert_user(user)
        record(hub, tx, actor=operator.actor, action="user.create", target=f"user:{name}", detail={"role": role})
    return user


def list_users(hub: Hub, operator: Operator, *, limit: int) -> list[User]:
    """All operator accounts (admin only)."""
    authorize(operator, "admin", action="user.list")
    with hub.store.transaction(readonly=True) as tx:
        return tx.list_users(limit=limit)


def disable_user(hub: Hub, operator: Operator, *, name: str) -> User:
    """Disable an account: every token it owns stops working (admin only)."""
    with operator_action(hub, operator, "admin", action="user.revoke", target=f"user:{name}") as tx:
        if name == operator.user:
            raise ConflictError("cannot_revoke_self", "an admin cannot disable their own account")
        user = tx.get_user(name)
        if user is None:
            raise NotFoundError("user_not_found", f"no user {name!r}")
        if user.disabled_at is None:
            now = hub.clock()
            user = replace(user, disabled_at=now)
            tx.disable_user(name, now=now)
            record(hub, tx, actor=operator.actor, action="user.revoke", target=f"user:{name}")
    return user


def create_api_token(
    hub: Hub, operator: Operator, *, user: str, description: str, ttl: timedelta | None
) -> tuple[ApiToken, str]:
    """Issue an API token for `user` (admin only); returns the metadata and the secret, shown once."""
    with operator_action(hub, operator, "admin", action="apitoken.create", target=f"user:{user}") as tx:
        owner = tx.get_user(user)
        if owner is None or owner.disabled_at is not None:
            raise NotFoundError("user_not_found", f"no active user {user!r}")
        token, secret = _new_token(tx, hub, user=user, description=description, ttl=ttl)
        record(
            hub,
            tx,
            actor=operator.actor,
            action="apitoken.create",
            target=f"apitoken:{token.id}",
            detail={"user": user},
        )
    return token, secret


def list_api_tokens(hub: Hub, operator: Operator, *, user: str | None, limit: int) -> list[ApiToken]:
    """API token metadata, never secrets (admin only)."""
    authorize(operator, "admin", action="apitoken.list")
    with hub.store.transaction(readonly=True) as tx:
        return tx.list_api_tokens(user=user, limit=limit)


def revoke_api_token(hub: Hub, operator: Operator, *, token_id: str) -> ApiToken:
    """Revoke an API token; it is refused from the next request on (admin only)."""
    with operator_action(hub, operator, "admin", action="apitoken.revoke", target=f"apitoken:{token_id}") as tx:
        token = tx.get_api_token(token_id)
        if token is None:
            raise NotFoundError("api_token_not_found", f"no API token {token_id!r}")
        if token.revoked_at is None:
            now = hub.clock()
            token = replace(token, revoked_at=now)
            tx.revoke_api_token(token_id, now=now)
            record(hub, tx, actor=operator.actor, action="apitoken.revoke", target=f"apitoken:{token_id}")
    return token
