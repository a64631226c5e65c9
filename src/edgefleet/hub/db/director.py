"""Queries on each device's director metadata (part of `Tx`), the latest few versions kept."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, delete, func, insert, select, text

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import DirectorMetadataRow

DIRECTOR_VERSIONS_KEPT = 4


class DirectorQueries(TxBase):
    """Mixed into `Tx`."""

    def latest_director(self, device_id: str, role: str) -> tuple[int, str] | None:
        row = DirectorMetadataRow
        query = select(row.version, row.body).where(row.device_id == device_id, row.role == role)
        found = self._s.execute(query.order_by(row.version.desc()).limit(1)).first()
        return None if found is None else (found[0], found[1])

    def latest_directors(self, device_id: str) -> dict[str, tuple[int, str]]:
        """Role -> (version, body) of the device's newest director metadata of each role, in one statement."""
        row = DirectorMetadataRow
        newest = (
            select(row.role, func.max(row.version).label("version"))
            .where(row.device_id == device_id)
            .group_by(row.role)
            .subquery()
        )
        query = (
            select(row.role, row.version, row.body)
            .join(newest, and_(row.role == newest.c.role, row.version == newest.c.version))
            .where(row.device_id == device_id)
        )
        return {r[0]: (r[1], r[2]) for r in self._s.execute(query)}

    def get_director(self, device_id: str, role: str, version: int) -> str | None:
        row = DirectorMetadataRow
        query = select(row.body).where(row.device_id == device_id, row.role == role, row.version == version)
        body: str | None = self._s.scalar(query)
        return body

    def insert_directors(self, device_id: str, signed: dict[str, tuple[int, str]], *, now: datetime) -> None:
        """Store new versions (role -> (version, body)); drop all but the newest few of those roles.

        Devices only ever fetch the newest. One statement on PostgreSQL, two on SQLite (no
        DELETE inside WITH there); plain statements on the session's connection: the ORM's bulk
        paths cost more than the statements themselves here (an update re-signs).
        """
        connection = self._s.connection()
        if self._postgres:
            roles = list(signed)
            connection.execute(
                _REPLACE,
                {
                    "device": device_id,
                    "roles": roles,
                    "versions": [signed[role][0] for role in roles],
                    "bodies": [signed[role][1] for role in roles],
                    "kept": DIRECTOR_VERSIONS_KEPT,
                    "now": now,
                },
            )
            return
        connection.execute(
            _INSERT,
            [
                {"device_id": device_id, "role": role, "version": version, "body": body, "created_at": now}
                for role, (version, body) in signed.items()
            ],
        )
        connection.execute(
            _DELETE_OLD,
            [
                {"device": device_id, "role": role, "oldest": version - DIRECTOR_VERSIONS_KEPT}
                for role, (version, _) in signed.items()
            ],
        )


_INSERT = insert(DirectorMetadataRow)
_DELETE_OLD = delete(DirectorMetadataRow).where(
    DirectorMetadataRow.device_id == bindparam("device"),
    DirectorMetadataRow.role == bindparam("role"),
    DirectorMetadataRow.version <= bindparam("oldest"),
)
_REPLACE = text(
    """
    WITH fresh AS (
        SELECT * FROM unnest(CAST(:roles AS text[]), CAST(:versions AS int[]), CAST(:bodies AS text[]))
            AS f(role, version, body)
    ), gone AS (
        DELETE FROM director_metadata AS old USING fresh
        WHERE old.device_id = :device AND old.role = fresh.role AND old.version <= fresh.version - :kept
    )
    INSERT INTO director_metadata (device_id, role, version, body, created_at)
    SELECT :device, role, version, body, :now FROM fresh
    """
)
"""`_INSERT` and `_DELETE_OLD` in one statement (PostgreSQL): the delete sees the rows from before the insert."""
