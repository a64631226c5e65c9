"""Dashboard sessions: log in with an operator API token, find the session behind a cookie, log out.

A session id is 256 random bits that only the browser's cookie holds; the database keeps its
SHA-256. A session records the API token it logged in with (its id, never the secret) and,
on every request, acts as that token's operator does now: revoking the token or disabling
its user ends the session at its next request. It also ends `web_session_idle` after its last
use (noted at most once a minute) and `web_session_absolute` after login. Login and logout
are audited (`web.login`, `web.logout`); refused logins too, within the hub's refusal budget.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from edgefleet.hub.context import Hub
from edgefleet.hub.db.web_sessions import WebSession, WebSessions
from edgefleet.hub.errors import AuthenticationError
from edgefleet.hub.records import ROLE_RANK
from edgefleet.hub.services import operators
from edgefleet.hub.services.audit import record, refusals_audited
from edgefleet.hub.services.operators import Operator

COOKIE = "__Host-edgefleet_session"
"""`__Host-`: the browser accepts it only with Secure, Path=/ and no Domain."""
LOGIN_COOKIE = "__Host-edgefleet_login"
"""Holds the login form's CSRF token (double submit): a page of another site cannot read or set it."""
TOUCH_EVERY = timedelta(minutes=1)
_SECRET_RE = re.compile(r"^[A-Za-z0-9_\-]{43}$")


@dataclass(frozen=True, slots=True)
class Session:
    """A live dashboard session: who acts (with the token's current role) and the forms' CSRF token."""

    id_hash: str
    operator: Operator
    csrf: str

    @property
    def can_act(self) -> bool:
        """Whether to show action buttons; the services check the role again on every action."""
        return ROLE_RANK[self.operator.role] >= ROLE_RANK["operator"]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """256 random bits, URL-safe: a session id or a CSRF token."""
    return secrets.token_urlsafe(32)


def expired(stored: WebSession, *, now: datetime, idle: timedelta, absolute: timedelta) -> bool:
    """Whether the session has passed its absolute or its idle lifetime (pure)."""
    return now - stored.created_at >= absolute or now - stored.seen_at >= idle


def login(hub: Hub, bearer: str, *, replacing: str | None = None) -> tuple[str, Session]:
    """Start a session for the operator of API token `bearer`; returns the cookie's secret and the session.

    `replacing` (the browser's previous session cookie, if any) is ended, so a login never
    keeps an id chosen before it. The token's oldest sessions past `web_sessions_per_token`
    and every expired session end too.

    Raises:
        AuthenticationError: the token is malformed, unknown, revoked or expired, or its user disabled.
    """
    with refusals_audited(hub, actor="anonymous", action="web.login", target="web", unauthenticated=True):
        operator = operators.authenticate(hub, bearer)
    settings = hub.settings
    now = hub.clock()
    secret, csrf = new_secret(), new_secret()
    with hub.store.transaction() as tx:
        sessions = WebSessions(tx)
        if replacing:
            sessions.delete(_hash(replacing))
        sessions.delete_expired(
            created_before=now - settings.web_session_absolute, seen_before=now - settings.web_session_idle
        )
        sessions.insert(
            WebSession(
                id_hash=_hash(secret),
                token_id=operator.token_id,
                username=operator.user,
                csrf=csrf,
                created_at=now,
                seen_at=now,
            )
        )
        sessions.keep_newest(operator.token_id, keep=settings.web_sessions_per_token, newest=_hash(secret))
        record(hub, tx, actor=operator.actor, action="web.login", target=f"apitoken:{operator.token_id}")
    return secret, Session(id_hash=_hash(secret), operator=operator, csrf=csrf)


def _end(hub: Hub, id_hash: str) -> None:
    with hub.store.transaction() as tx:
        WebSessions(tx).delete(id_hash)


def resolve(hub: Hub, secret: str | None, *, touch: bool = True) -> Session:
    """The live session behind a cookie value; with `touch`, this counts as a use (it resets the idle clock).

    Live streams check their session without `touch`: an open page alone does not keep it alive.

    Raises:
        AuthenticationError: no cookie, an unknown or expired session, or a session whose
            token was revoked or expired or whose user was disabled (the session ends then).
    """
    if not secret or not _SECRET_RE.fullmatch(secret):
        raise AuthenticationError("login_required", "log in with an operator API token")
    id_hash = _hash(secret)
    now = hub.clock()
    settings = hub.settings
    operator: Operator | None = None
    refused: AuthenticationError | None = None
    with hub.store.transaction(readonly=True) as tx:  # one read: the session, its token and its user
        stored = WebSessions(tx).get(id_hash)
        live = stored is not None and not expired(
            stored, now=now, idle=settings.web_session_idle, absolute=settings.web_session_absolute
        )
        if stored is not None and live:
            try:
                operator = operators.operator_in(tx, stored.token_id, now=now)
            except AuthenticationError as exc:
                refused = exc
    if stored is None:
        raise AuthenticationError("session_unknown", "your session has ended; log in again")
    if operator is None:
        _end(hub, id_hash)
        if refused is None:
            raise AuthenticationError("session_expired", "your session expired; log in again")
        raise AuthenticationError("session_revoked", f"your session has ended: {refused.message}") from refused
    if touch and now - stored.seen_at >= TOUCH_EVERY:
        # Written at most once a minute, in its own short transaction: page reads stay read-only.
        with hub.store.transaction() as tx:
            WebSessions(tx).touch(id_hash, now=now)
    return Session(id_hash=id_hash, operator=operator, csrf=stored.csrf)


def logout(hub: Hub, session: Session) -> None:
    """End the session and audit it."""
    with hub.store.transaction() as tx:
        WebSessions(tx).delete(session.id_hash)
        record(
            hub,
            tx,
            actor=session.operator.actor,
            action="web.logout",
            target=f"apitoken:{session.operator.token_id}",
        )
