"""Queries on dashboard sessions (the `web_sessions` table), over an open `Tx`.

Kept apart from `store.Tx` so the dashboard's table lives in one module; `WebSessions(tx)`
uses the transaction's session the way `RolloutQueries` does. The session id itself is never
stored: rows are keyed by its SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select

from edgefleet.hub.db.models import WebSessionRow
from edgefleet.hub.db.store import Tx


@dataclass(frozen=True, slots=True)
class WebSession:
    """A stored dashboard session: whose token, its CSRF token, when it began and was last used."""

    id_hash: str
    token_id: str
    username: str
    csrf: str
    created_at: datetime
    seen_at: datetime


def _session(row: WebSessionRow) -> WebSession:
    return WebSession(**{name: getattr(row, name) for name in WebSession.__slots__})


class WebSessions:
    """The dashboard-session queries of one transaction."""

    def __init__(self, tx: Tx) -> None:
        self._s = tx._s  # the transaction's own session (same package)

    def insert(self, session: WebSession) -> None:
        self._s.add(WebSessionRow(**{name: getattr(session, name) for name in WebSession.__slots__}))
        self._s.flush()

    def get(self, id_hash: str) -> WebSession | None:
        row = self._s.get(WebSessionRow, id_hash)
        return None if row is None else _session(row)

    def touch(self, id_hash: str, *, now: datetime) -> None:
        row = self._s.get(WebSessionRow, id_hash)
        if row is not None:
            row.seen_at = now
            self._s.flush()

    def delete(self, id_hash: str) -> bool:
        """Remove one session; False when it was already gone."""
        result = self._s.execute(delete(WebSessionRow).where(WebSessionRow.id_hash == id_hash))
        return bool(getattr(result, "rowcount", 0))

    def delete_expired(self, *, created_before: datetime, seen_before: datetime) -> None:
        """Drop every session past its absolute or its idle expiry."""
        self._s.execute(
            delete(WebSessionRow).where(
                or_(WebSessionRow.created_at < created_before, WebSessionRow.seen_at < seen_before)
            )
        )

    def keep_newest(self, token_id: str, *, keep: int, newest: str) -> None:
        """Keep the token's session `newest` and its `keep - 1` most recent others; drop the rest."""
        query = (
            select(WebSessionRow.id_hash)
            .where(WebSessionRow.token_id == token_id, WebSessionRow.id_hash != newest)
            .order_by(WebSessionRow.created_at.desc(), WebSessionRow.id_hash)
            .offset(max(keep - 1, 0))
        )
        old = list(self._s.scalars(query))
        if old:
            self._s.execute(delete(WebSessionRow).where(WebSessionRow.id_hash.in_(old)))
