"""Queries on each device's director metadata (part of `Tx`), the latest few versions kept."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, bindparam, delete, func, insert, select, text

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
        return {r[0]: (r[1], r[2]) for r in self._s.execute(_LATEST, {"device": device_id})}

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
            parameters: dict[str, Any] = {"device": device_id, "kept": DIRECTOR_VERSIONS_KEPT, "now": now}
            for i, (role, (version, body)) in enumerate(signed.items()):
                parameters.update({f"role_{i}": role, f"version_{i}": version, f"body_{i}": body})
            connection.execute(_replacing(len(signed)), parameters)
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


def _latest() -> Any:
    row = DirectorMetadataRow
    device = bindparam("device", type_=String())
    newest = select(row.role, func.max(row.version).label("version")).where(row.device_id == device).group_by(row.role)
    newest_roles = newest.subquery()
    return (
        select(row.role, row.version, row.body)
        .join(newest_roles, and_(row.role == newest_roles.c.role, row.version == newest_roles.c.version))
        .where(row.device_id == device)
    )


_LATEST = _latest()
"""Built once: building a statement costs more than running a cached one (the device path re-signs often)."""
_INSERT = insert(DirectorMetadataRow)
_DELETE_OLD = delete(DirectorMetadataRow).where(
    DirectorMetadataRow.device_id == bindparam("device"),
    DirectorMetadataRow.role == bindparam("role"),
    DirectorMetadataRow.version <= bindparam("oldest"),
)


@functools.lru_cache(maxsize=8)
def _replacing(count: int) -> Any:
    """`_INSERT` and `_DELETE_OLD` of `count` roles in one statement (PostgreSQL): the delete sees the rows from before.

    Plain SQL with a row of parameters per role (an array of bodies would be escaped character by character).
    """
    rows = ", ".join(
        f"(CAST(:role_{i} AS text), CAST(:version_{i} AS int), CAST(:body_{i} AS text))" for i in range(count)
    )
    return text(
        f"WITH fresh (role, version, body) AS (VALUES {rows}), "  # noqa: S608 - a count spliced in; values bound
        "gone AS (DELETE FROM director_metadata AS old USING fresh "
        "WHERE old.device_id = :device AND old.role = fresh.role AND old.version <= fresh.version - :kept) "
        "INSERT INTO director_metadata (device_id, role, version, body, created_at) "
        "SELECT :device, role, version, body, :now FROM fresh"
    ).bindparams(bindparam("now", type_=DirectorMetadataRow.__table__.c.created_at.type))
