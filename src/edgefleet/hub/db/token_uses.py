"""Queries on the device tokens that made a change (the `device_token_uses` table), over an open `Tx`.

A device's token may carry one change (a report, events, a certificate renewal): its `jti` is
claimed in the transaction that makes the change, so a replay of the token, to any hub process,
finds it claimed (on PostgreSQL a changed report claims it in its own statement,
`device_path.DevicePathQueries.report`). Rows go once their token has expired (a token past
its expiry is refused anyway), in `prune`, which the scheduler runs every 30 s.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from edgefleet.hub.db.models import DeviceTokenUseRow
from edgefleet.hub.db.store import Tx


class TokenUses:
    """The token-use queries of one transaction."""

    def __init__(self, tx: Tx) -> None:
        self._s = tx._s  # the transaction's own session (same package)

    def claim(self, device_id: str, jti: str, *, expires_at: datetime) -> bool:
        """Record that the token `jti` of the device made a change (one statement); False when it already had."""
        postgres = self._s.get_bind().dialect.name == "postgresql"
        parameters = {"device_id": device_id, "jti": jti, "expires_at": expires_at}
        return self._s.connection().execute(_claim(postgres=postgres), parameters).first() is not None

    def prune(self, *, now: datetime) -> int:
        """Forget every token that has expired; returns how many."""
        result = self._s.execute(delete(DeviceTokenUseRow).where(DeviceTokenUseRow.expires_at < now))
        return int(getattr(result, "rowcount", 0) or 0)


@functools.cache
def _claim(*, postgres: bool) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: a row back means the token was not used before."""
    insert = postgresql.insert if postgres else sqlite.insert
    return insert(DeviceTokenUseRow).on_conflict_do_nothing().returning(DeviceTokenUseRow.jti)
