"""Queries on what each device must run per app (part of `Tx`); who assigned it is kept as text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select

from edgefleet.hub.db.base import _BATCH, TxBase
from edgefleet.hub.db.models import AssignmentRow
from edgefleet.hub.notify import answers_key
from edgefleet.hub.records import (
    AssignedBy,
    Assignment,
)


def _assignment(row: Any) -> Assignment:
    """An assignment from its row: an `AssignmentRow` or a plain row of `_COLUMNS`."""
    return Assignment(
        device_id=row.device_id,
        app=row.app,
        version=row.version,
        release_counter=row.release_counter,
        rollback=row.rollback,
        assigned_by=_assigned_by(row.assigned_by),
        assigned_at=row.assigned_at,
        retry=row.retry,
    )


_COLUMNS = tuple(AssignmentRow.__table__.columns)
_OF_DEVICE = select(*_COLUMNS).where(AssignmentRow.device_id == bindparam("device")).order_by(AssignmentRow.app)

_ROLLOUT_PREFIX, _ROLLBACK_SUFFIX = "deployment:", ":rollback"


def _assigned_by(stored: str) -> AssignedBy:
    """The column's text (`str(AssignedBy)`) read back into its parts: here, and nowhere else."""
    if not stored.startswith(_ROLLOUT_PREFIX):
        return AssignedBy.operator(stored)
    name = stored.removeprefix(_ROLLOUT_PREFIX)
    if name.endswith(_ROLLBACK_SUFFIX):
        return AssignedBy.rollout(name.removesuffix(_ROLLBACK_SUFFIX), rollback=True)
    return AssignedBy.rollout(name)


def _assignment_values(assignment: Assignment) -> dict[str, Any]:
    values = {name: getattr(assignment, name) for name in Assignment.__slots__}
    values["assigned_by"] = str(assignment.assigned_by)
    return values


class AssignmentQueries(TxBase):
    """Mixed into `Tx`."""

    def put_assignment(self, assignment: Assignment) -> None:
        self._put(AssignmentRow, (assignment.device_id, assignment.app), _assignment_values(assignment))
        self._changes(answers_key(assignment.device_id))

    def put_assignments(self, assignments: Sequence[Assignment]) -> None:
        """Insert or overwrite many assignments of one app at once (a rollout's wave)."""
        apps = {a.app for a in assignments}
        if not assignments:
            return
        if len(apps) != 1:
            raise ValueError("put_assignments takes assignments of one app")
        self._s.flush()
        for start in range(0, len(assignments), _BATCH):
            chunk = assignments[start : start + _BATCH]
            devices = [a.device_id for a in chunk]
            self._s.execute(
                delete(AssignmentRow).where(AssignmentRow.app == chunk[0].app, AssignmentRow.device_id.in_(devices))
            )
            self._s.execute(insert(AssignmentRow), [_assignment_values(a) for a in chunk])
        self._s.expire_all()  # rows loaded earlier in this transaction are stale now
        self._changes_many([answers_key(a.device_id) for a in assignments])

    def assignments_of_app(self, app: str, devices: Sequence[str]) -> dict[str, Assignment]:
        """Device id -> its assignment of `app`, for those of `devices` that have one (plain rows, in batches)."""
        found: dict[str, Assignment] = {}
        ordered = sorted(set(devices))
        for start in range(0, len(ordered), _BATCH):
            query = select(*_COLUMNS).where(
                AssignmentRow.app == app, AssignmentRow.device_id.in_(ordered[start : start + _BATCH])
            )
            found.update((row.device_id, _assignment(row)) for row in self._s.execute(query))
        return found

    def delete_assignment(self, device_id: str, app: str) -> None:
        self._s.execute(delete(AssignmentRow).where(AssignmentRow.device_id == device_id, AssignmentRow.app == app))
        self._changes(answers_key(device_id))

    def list_assignments(self, device_id: str) -> list[Assignment]:
        """The device's assignments by app: plain rows (the device path reads them often; no ORM objects)."""
        return [_assignment(row) for row in self._s.execute(_OF_DEVICE, {"device": device_id})]
