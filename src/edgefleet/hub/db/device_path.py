"""The device hot path's writes, in one place: a changed state report as one statement, last-seen times in batches.

A change that is more than a report (a batch of events) starts with one statement too: its
token spent and the device's row locked (`claim_locking`).

Everything else a device's steady state asks for (its record, its target answer, an unchanged
report) is answered from the process's caches (`hub.devicecache`) without a statement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, bindparam, column, or_, text, update

from edgefleet.hub.db.base import _BATCH
from edgefleet.hub.db.devices import _device
from edgefleet.hub.db.listen import CHANNEL
from edgefleet.hub.db.models import DeviceRow
from edgefleet.hub.db.store import Tx
from edgefleet.hub.records import Device

# PostgreSQL: claim the token, compare-and-set the twin, announce the change; all or nothing.
# The twin is compared as the text it was stored as (json keeps it as written: json.dumps's).
_REPORT = text(
    """
    WITH claim AS (
        INSERT INTO device_token_uses (device_id, jti, expires_at) VALUES (:device, :jti, :expires)
        ON CONFLICT DO NOTHING
        RETURNING device_id
    ), changed AS (
        UPDATE devices SET reported = CAST(:reported AS json), updated_at = :now
        WHERE id = :device AND status = 'accepted' AND reported::text = :expected
          AND EXISTS (SELECT 1 FROM claim)
        RETURNING devices.*
    ), told AS (
        SELECT pg_notify(:channel, id) FROM changed
    )
    SELECT (SELECT count(*) FROM claim) AS claimed, (SELECT count(*) FROM told) AS told, changed.*
    FROM (SELECT 1) AS one LEFT JOIN changed ON true
    """
).columns(column("claimed", Integer), column("told", Integer), *DeviceRow.__table__.columns)
"""Typed by the table's columns, so the twin and the times come back as the ORM reads them."""


# PostgreSQL: claim the token and lock the device's row, reading its status, in one statement.
# What the change reads next comes in later statements: they see whatever committed before the lock.
_CLAIM_LOCKING = text(
    """
    WITH claim AS (
        INSERT INTO device_token_uses (device_id, jti, expires_at) VALUES (:device, :jti, :expires)
        ON CONFLICT DO NOTHING
        RETURNING device_id
    )
    SELECT (SELECT status FROM devices WHERE id = :device FOR UPDATE) AS status, (SELECT count(*) FROM claim) AS claimed
    """
)


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """What the one-statement report did: `device` is set when it changed the twin."""

    claimed: bool
    """False: the token had already made a change (nothing was written)."""
    device: Device | None


class DevicePathQueries:
    """The device path's statements, over an open `Tx`."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self._s = tx._s  # the transaction's own session (same package)

    def report(
        self,
        device_id: str,
        *,
        jti: str,
        token_expires: datetime,
        expected: dict[str, Any],
        reported: dict[str, Any],
        now: datetime,
    ) -> ReportOutcome:
        """PostgreSQL only: spend the token and set the twin to `reported` if it is still `expected`, in one statement.

        `device` is None when the twin or the device's status changed since `expected` was read (or
        the token was spent): the caller rolls back, so a claimed token is not spent for nothing.
        """
        parameters = {
            "device": device_id,
            "jti": jti,
            "expires": token_expires,
            "expected": json.dumps(expected),
            "reported": json.dumps(reported),
            "now": now,
            "channel": CHANNEL,
        }
        row = self._s.execute(_REPORT, parameters).mappings().one()
        if not row["claimed"]:
            return ReportOutcome(claimed=False, device=None)
        if row["id"] is None:
            return ReportOutcome(claimed=True, device=None)
        self._tx.changed.add(device_id)  # announced by the statement itself: the committing process forgets it too
        values = {column.name: row[column.name] for column in DeviceRow.__table__.columns}
        return ReportOutcome(claimed=True, device=_device(DeviceRow(**values)))

    def claim_locking(self, device_id: str, *, jti: str, token_expires: datetime) -> tuple[str | None, bool]:
        """PostgreSQL only: lock the device's row and spend the token, in one statement.

        Returns the device's status (None: no such device) and whether the token was unspent.
        """
        parameters = {"device": device_id, "jti": jti, "expires": token_expires}
        status, claimed = self._s.execute(_CLAIM_LOCKING, parameters).one()
        return status, bool(claimed)

    def touch(self, seen: dict[str, datetime]) -> None:
        """Record when devices were last heard from (never moving a time backwards), `_BATCH` devices a statement."""
        statement = (
            update(DeviceRow)
            .where(
                DeviceRow.id == bindparam("device"),
                or_(DeviceRow.last_seen_at.is_(None), DeviceRow.last_seen_at < bindparam("seen")),
            )
            .values(last_seen_at=bindparam("seen"))
            .execution_options(synchronize_session=False)
        )
        rows = [{"device": device_id, "seen": at} for device_id, at in sorted(seen.items())]
        for start in range(0, len(rows), _BATCH):
            self._s.connection().execute(statement, rows[start : start + _BATCH])
