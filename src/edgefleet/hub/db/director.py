"""Queries on each device's director metadata (part of `Tx`), the latest few versions kept."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, delete, func, select

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import DirectorMetadataRow

DIRECTOR_VERSIONS_KEPT = 4


class DirectorQueries(TxBase):
    """Mixed into `Tx`."""

    def latest_director(self, device_id: str, role: str) -> tuple[int, str] | None:
        query = select(DirectorMetadataRow).where(
            DirectorMetadataRow.device_id == device_id, DirectorMetadataRow.role == role
        )
        row = self._s.scalar(query.order_by(DirectorMetadataRow.version.desc()).limit(1))
        return None if row is None else (row.version, row.body)

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
        row = self._s.get(DirectorMetadataRow, (device_id, role, version))
        return None if row is None else row.body

    def insert_director(self, device_id: str, role: str, version: int, body: str, *, now: datetime) -> None:
        """Store a new version and drop all but the newest few (devices only ever fetch the newest)."""
        self._s.add(DirectorMetadataRow(device_id=device_id, role=role, version=version, body=body, created_at=now))
        self._s.execute(
            delete(DirectorMetadataRow).where(
                DirectorMetadataRow.device_id == device_id,
                DirectorMetadataRow.role == role,
                DirectorMetadataRow.version <= version - DIRECTOR_VERSIONS_KEPT,
            )
        )
        self._s.flush()
