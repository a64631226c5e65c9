"""Queries on signed releases (part of `Tx`), and the releases each process keeps once read (they never change)."""

from __future__ import annotations

import math

from sqlalchemy import func, select

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import ReleaseRow
from edgefleet.hub.devicecache import Expiring
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


KEPT_RELEASES = 4096
"""Releases one process keeps (`KeptReleases`); the least recently used go first."""


class KeptReleases:
    """Releases read by committed, read-only transactions of this process.

    A stored release is never changed or deleted, so one read is good for the process's
    life. Only what a read-only transaction read is kept: a release a writing transaction
    sees may be its own insert, which a rollback would undo.
    """

    def __init__(self, capacity: int = KEPT_RELEASES) -> None:
        self._releases = Expiring[ReleaseRecord](capacity=capacity, ttl=math.inf)

    def get(self, app: str, version: str) -> ReleaseRecord | None:
        return self._releases.get(f"{app}@{version}")

    def keep(self, release: ReleaseRecord) -> None:
        self._releases.put(f"{release.app}@{release.version}", release, self._releases.ticket())


class ReleaseQueries(TxBase):
    """Mixed into `Tx`."""

    def insert_release(self, release: ReleaseRecord) -> None:
        values = {f: getattr(release, f) for f in ReleaseRecord.__slots__}
        for name in ("architectures", "artifacts", "signer_keyids"):
            values[name] = list(values[name])
        self._s.add(ReleaseRow(**values))
        self._s.flush()

    def get_release(self, app: str, version: str) -> ReleaseRecord | None:
        kept = self._kept_releases
        release = None if kept is None else kept.get(app, version)
        if release is not None:
            return release
        row = self._s.get(ReleaseRow, (app, version))
        if row is None:
            return None
        release = _release(row)
        if kept is not None and self._readonly:
            kept.keep(release)
        return release

    def list_releases(self, *, app: str | None, limit: int) -> list[ReleaseRecord]:
        query = select(ReleaseRow).order_by(ReleaseRow.app, ReleaseRow.release_counter.desc()).limit(limit)
        if app is not None:
            query = query.where(ReleaseRow.app == app)
        return [_release(row) for row in self._s.scalars(query)]

    def max_release_counter(self, app: str) -> int:
        value = self._s.scalar(select(func.max(ReleaseRow.release_counter)).where(ReleaseRow.app == app))
        return int(value or 0)
