"""Queries on enrollment tokens (part of `Tx`), known only by their hashes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import EnrollmentTokenRow
from edgefleet.hub.records import EnrollmentToken


def _enrollment_token(row: EnrollmentTokenRow) -> EnrollmentToken:
    return EnrollmentToken(
        id=row.id,
        fleet=row.fleet,
        tags=dict(row.tags),
        max_uses=row.max_uses,
        used=row.used,
        require_approval=row.require_approval,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class EnrollmentTokenQueries(TxBase):
    """Mixed into `Tx`."""

    def insert_enrollment_token(self, token: EnrollmentToken, *, token_hash: str) -> None:
        values = {name: getattr(token, name) for name in EnrollmentToken.__slots__}
        self._s.add(EnrollmentTokenRow(token_hash=token_hash, **values))
        self._s.flush()

    def get_enrollment_token(self, token_id: str) -> EnrollmentToken | None:
        row = self._s.get(EnrollmentTokenRow, token_id)
        return None if row is None else _enrollment_token(row)

    def find_enrollment_token(self, token_hash: str) -> EnrollmentToken | None:
        row = self._s.scalar(select(EnrollmentTokenRow).where(EnrollmentTokenRow.token_hash == token_hash))
        return None if row is None else _enrollment_token(row)

    def list_enrollment_tokens(self, *, limit: int) -> list[EnrollmentToken]:
        query = select(EnrollmentTokenRow).order_by(EnrollmentTokenRow.created_at).limit(limit)
        return [_enrollment_token(row) for row in self._s.scalars(query)]

    def consume_enrollment_token(self, token_id: str, *, now: datetime) -> bool:
        """Count one use, atomically, only if the token is still usable; False otherwise."""
        result = self._s.execute(
            update(EnrollmentTokenRow)
            .where(
                EnrollmentTokenRow.id == token_id,
                EnrollmentTokenRow.used < EnrollmentTokenRow.max_uses,
                EnrollmentTokenRow.revoked_at.is_(None),
                EnrollmentTokenRow.expires_at > now,
            )
            .values(used=EnrollmentTokenRow.used + 1)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def revoke_enrollment_token(self, token_id: str, *, now: datetime) -> None:
        self._s.execute(
            update(EnrollmentTokenRow)
            .where(EnrollmentTokenRow.id == token_id, EnrollmentTokenRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )
