"""Queries on the image repository's TUF metadata (part of `Tx`), and the lock its writers take."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.exc import IntegrityError

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import RepoMetadataRow
from edgefleet.hub.errors import ConflictError
from edgefleet.hub.notify import METADATA_CHANGED

_PG_REPOSITORY_LOCK = 0x6564676572657031
"""Transaction-scoped advisory lock serialising writers of repository and director metadata."""


_NEWEST = (
    select(RepoMetadataRow.version, RepoMetadataRow.body)
    .where(RepoMetadataRow.role == bindparam("role"))
    .order_by(RepoMetadataRow.version.desc())
    .limit(1)
)
"""Built once, as the other statements devices' requests run often (building costs more than running them)."""
_NEWEST_FOR_UPDATE = _NEWEST.with_for_update()
_NEWEST_VERSION = select(func.max(RepoMetadataRow.version)).where(RepoMetadataRow.role == bindparam("role"))


class RepositoryQueries(TxBase):
    """Mixed into `Tx`."""

    def latest_metadata_version(self, role: str) -> int | None:
        """The newest stored version of `role`, without its body."""
        version: int | None = self._s.scalar(_NEWEST_VERSION, {"role": role})
        return version

    def latest_metadata(self, role: str, *, for_update: bool = False) -> tuple[int, str] | None:
        """(version, body) of the newest stored metadata of `role`."""
        found = self._s.execute(_NEWEST_FOR_UPDATE if for_update else _NEWEST, {"role": role}).first()
        return None if found is None else (found[0], found[1])

    def latest_metadata_of(self, roles: tuple[str, ...]) -> dict[str, tuple[int, str]]:
        """Role -> (version, body) of the newest stored metadata of each of `roles` (those stored), in one statement."""
        row = RepoMetadataRow
        newest = (
            select(row.role, func.max(row.version).label("version"))
            .where(row.role.in_(roles))
            .group_by(row.role)
            .subquery()
        )
        query = select(row.role, row.version, row.body).join(
            newest, and_(row.role == newest.c.role, row.version == newest.c.version)
        )
        return {r[0]: (r[1], r[2]) for r in self._s.execute(query)}

    def metadata_versions(self) -> dict[str, int]:
        """The newest stored version of every role (few: the top-level roles, the director's root, delegated roles)."""
        query = select(RepoMetadataRow.role, func.max(RepoMetadataRow.version)).group_by(RepoMetadataRow.role)
        return {role: int(version) for role, version in self._s.execute(query)}

    def get_metadata(self, role: str, version: int) -> str | None:
        row = RepoMetadataRow
        body: str | None = self._s.scalar(select(row.body).where(row.role == role, row.version == version))
        return body

    def insert_metadata(self, role: str, version: int, body: str, *, now: datetime) -> None:
        """Store a new version of `role`; every hub process forgets the newest versions it knew once this commits."""
        self._s.add(RepoMetadataRow(role=role, version=version, body=body, created_at=now))
        try:
            self._s.flush()
        except IntegrityError as exc:
            raise ConflictError("version_exists", f"{role} version {version} already exists") from exc
        self._changes(METADATA_CHANGED)

    def lock_repository(self) -> None:
        """Serialise writers of repository and director metadata until this transaction ends.

        SQLite already holds its one write lock (BEGIN IMMEDIATE); PostgreSQL takes an
        advisory lock, so two replicas never sign the same version twice.
        """
        self._advisory_lock(_PG_REPOSITORY_LOCK)
