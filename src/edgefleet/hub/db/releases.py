"""Queries on signed releases (part of `Tx`)."""

from __future__ import annotations

from sqlalchemy import func, select

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import ReleaseRow
from edgefleet.hub.records import ReleaseRecord


def _release(row: ReleaseRow) -> ReleaseRecord:
    return ReleaseRecord(
        app=row.app,
        version=row.version,
        release_counter=row.release_counter,
        architectures=tuple(row.architectures),
        manifest_path=row.manifest_path,
        manifest_length=row.manifest_length,
        manifest_sha256=row.manifest_sha256,
        artifacts=tuple(row.artifacts),
        signer_keyids=tuple(row.signer_keyids),
        targets_version=row.targets_version,
        created_at=row.created_at,
        role=row.role,
    )


class ReleaseQueries(TxBase):
    """Mixed into `Tx`."""

    def insert_release(self, release: ReleaseRecord) -> None:
        values = {f: getattr(release, f) for f in ReleaseRecord.__slots__}
        for name in ("architectures", "artifacts", "signer_keyids"):
            values[name] = list(values[name])
        self._s.add(ReleaseRow(**values))
        self._s.flush()

    def get_release(self, app: str, version: str) -> ReleaseRecord | None:
        row = self._s.get(ReleaseRow, (app, version))
        return None if row is None else _release(row)

    def list_releases(self, *, app: str | None, limit: int) -> list[ReleaseRecord]:
        query = select(ReleaseRow).order_by(ReleaseRow.app, ReleaseRow.release_counter.desc()).limit(limit)
        if app is not None:
            query = query.where(ReleaseRow.app == app)
        return [_release(row) for row in self._s.scalars(query)]

    def max_release_counter(self, app: str) -> int:
        value = self._s.scalar(select(func.max(ReleaseRow.release_counter)).where(ReleaseRow.app == app))
        return int(value or 0)
