"""Queries on the tamper-evident audit chain (part of `Tx`); the seal is computed by the caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import (
    AuditHeadRow,
    AuditRow,
)
from edgefleet.hub.errors import HubConfigError
from edgefleet.hub.records import AuditEntry

Seal = Callable[[int, str, dict[str, Any]], str]
"""(seq, prev_hash, fields) -> hash: the audit chain's keyed digest, supplied by the caller."""


AUDIT_GENESIS = "0" * 64


def _audit(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        detail=dict(row.detail),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class AuditQueries(TxBase):
    """Mixed into `Tx`."""

    def append_audit(self, fields: dict[str, Any], *, seal: Seal) -> AuditEntry:
        """Append one entry after the current head; the head's row lock orders concurrent appends.

        Plain statements (the ORM's unit of work cost more than they do: every change is
        audited, device events included): the head is locked and read once per transaction,
        and each entry is inserted and the head moved in one statement on PostgreSQL (two on
        SQLite, where a WITH holds no UPDATE; its write lock is the transaction's anyway).
        """
        connection = self._s.connection()
        head = self._locked_audit_head
        if head is None:
            found = connection.execute(_HEAD_FOR_UPDATE).first()
            if found is None:
                raise HubConfigError("audit_head_missing", "audit head row missing: database not migrated")
            head = (found[0], found[1])
        seq, prev_hash = head[0] + 1, head[1]
        digest = seal(seq, prev_hash, fields)
        row = {"seq": seq, "prev_hash": prev_hash, "hash": digest, **fields}
        if self._postgres:
            connection.execute(_APPEND_MOVING_HEAD, {**row, "new_seq": seq, "new_hash": digest})
        else:
            connection.execute(_APPEND, row)
            connection.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": digest})
        self._locked_audit_head = (seq, digest)
        return AuditEntry(seq=seq, prev_hash=prev_hash, hash=digest, **{**fields, "detail": dict(fields["detail"])})

    def list_audit(self, *, after: int, limit: int, descending: bool = False) -> list[AuditEntry]:
        query = select(AuditRow).limit(limit)
        if descending:
            query = query.order_by(AuditRow.seq.desc())
            if after:
                query = query.where(AuditRow.seq < after)
        else:
            query = query.order_by(AuditRow.seq).where(AuditRow.seq > after)
        return [_audit(row) for row in self._s.scalars(query)]

    def audit_head(self) -> tuple[int, str]:
        head = self._s.connection().execute(_HEAD).first()
        return (0, AUDIT_GENESIS) if head is None else (head[0], head[1])


_HEAD = select(AuditHeadRow.seq, AuditHeadRow.hash).where(AuditHeadRow.id == 1)
_HEAD_FOR_UPDATE = _HEAD.with_for_update()
_APPEND = insert(AuditRow)
_MOVE_HEAD = (
    update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)
_APPEND_MOVING_HEAD = _APPEND.add_cte(_MOVE_HEAD.cte("moved"))
"""`_APPEND` and `_MOVE_HEAD` in one statement (PostgreSQL runs a data-modifying WITH whether read or not)."""
