"""The part of `Tx` every query module shares: the session, the changes a transaction announces, locks."""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edgefleet.hub.db.listen import CHANNEL, EVERY_DEVICE
from edgefleet.hub.db.models import Base

if TYPE_CHECKING:
    from edgefleet.hub.db.releases import KeptReleases

_BATCH = 1000
"""Rows per statement in bulk writes."""
_MAX_NOTIFY_PAYLOAD = 1000
"""PostgreSQL refuses payloads of 8000 bytes or more; a longer key (never a device id) wakes every device."""


class TxBase:
    """One transaction's session and the devices whose answers it changes; the query mixins build on it."""

    def __init__(self, session: Session, *, readonly: bool = False, releases: KeptReleases | None = None) -> None:
        self._s = session
        self._readonly = readonly
        self._kept_releases = releases
        """The process's releases read before (`releases.KeptReleases`); None: read each time."""
        self._postgres = session.get_bind().dialect.name == "postgresql"
        self._locked_audit_head: tuple[int, str] | None = None
        """The audit chain's head (seq, hash) once this transaction holds its row lock (`append_audit`).

        Right only while a failed statement ends the whole transaction: a SAVEPOINT rolled back
        after an append would leave it ahead of the table (the hub uses none).
        """
        self.changed: set[str] = set()
        """Devices whose answers this transaction may change; `EVERY_DEVICE` for all of them; `METADATA_CHANGED`."""

    def _changes_many(self, device_ids: Collection[str]) -> None:
        """`_changes` for many devices, in one statement on PostgreSQL (a wave can assign thousands)."""
        new = sorted({d for d in device_ids if len(d) <= _MAX_NOTIFY_PAYLOAD} - self.changed)
        if not new:
            return
        self.changed.update(new)
        if self._postgres:
            self._s.execute(
                text("SELECT pg_notify(:channel, device) FROM unnest(CAST(:devices AS text[])) AS device"),
                {"channel": CHANNEL, "devices": new},
            )

    def _changes(self, device_id: str | None) -> None:
        """Note that the device's answers (None: every device's) may change when this transaction commits."""
        key = EVERY_DEVICE if device_id is None or len(device_id) > _MAX_NOTIFY_PAYLOAD else device_id
        if key in self.changed:
            return
        self.changed.add(key)
        if self._postgres:
            # Queued by PostgreSQL and delivered to every listening hub process on commit only.
            self._s.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": key})

    def _put(self, table: type[Base], key: tuple[str, ...], values: dict[str, Any]) -> None:
        """Insert the row, or overwrite the one with this primary key."""
        row = self._s.get(table, key)
        if row is None:
            self._s.add(table(**values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
        self._s.flush()

    def _upsert(self, table: type[Base], key: tuple[str, ...]) -> Any:
        """A statement inserting a row of `table` given all its columns, or overwriting the one with the same `key`.

        Built once per table and dialect, so executing it costs no statement compilation.
        """
        return _upsert_statement(table, key, postgres=self._postgres)

    def _advisory_lock(self, lock_id: int) -> None:
        """PostgreSQL: a lock held until the transaction ends. SQLite: BEGIN IMMEDIATE already serialises writers."""
        if self._s.get_bind().dialect.name == "postgresql":
            self._s.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})

    def ping(self) -> None:
        self._s.execute(text("SELECT 1"))


@functools.cache
def _upsert_statement(table: type[Base], key: tuple[str, ...], *, postgres: bool) -> Any:
    insert = postgresql.insert if postgres else sqlite.insert
    statement = insert(table)
    columns = [column.name for column in table.__table__.columns if column.name not in key]
    return statement.on_conflict_do_update(
        index_elements=list(key), set_={name: statement.excluded[name] for name in columns}
    )
