"""Queries about deployments and the devices their rollouts assigned (part of `Tx`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgefleet.hub.db.base import _BATCH
from edgefleet.hub.db.models import AssignmentRow, DeploymentMemberRow, DeploymentRow, DeviceRow, DeviceUpdateRow
from edgefleet.hub.errors import ConflictError
from edgefleet.hub.records import Deployment, DeploymentMember

_PG_ROLLOUT_LOCK = 0x6564676572726F6C
"""Transaction-scoped advisory lock: one scheduler pass (or deployment change) at a time across hub processes."""


def _deployment(row: DeploymentRow) -> Deployment:
    return Deployment(**{name: getattr(row, name) for name in Deployment.__slots__})


def _fleet_row(row: Any) -> tuple[str, str, dict[str, str], str, str, dict[str, Any]]:
    return (row[0], row[1], dict(row[2]), row[3], row[4], dict(row[5]))


_MEMBER_COLUMNS = [getattr(DeploymentMemberRow, name) for name in DeploymentMember.__slots__]
"""The member columns in the order of `DeploymentMember`'s fields."""


def _member(row: DeploymentMemberRow) -> DeploymentMember:
    return DeploymentMember(**{name: getattr(row, name) for name in DeploymentMember.__slots__})


class RolloutQueries:
    """Mixed into `Tx`: deployments, their members, and what the scheduler reads of devices."""

    _s: Session

    def lock_rollouts(self, *, wait: bool = True) -> bool:
        """Serialise scheduler passes and deployment changes until the transaction ends.

        SQLite already holds its one write lock (BEGIN IMMEDIATE). PostgreSQL takes an
        advisory lock; with `wait=False` it answers False at once when another process holds it.
        """
        if self._s.get_bind().dialect.name != "postgresql":
            return True
        if wait:
            self._s.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_ROLLOUT_LOCK})
            return True
        return bool(self._s.scalar(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": _PG_ROLLOUT_LOCK}))

    def insert_deployment(self, deployment: Deployment) -> None:
        self._s.add(DeploymentRow(**{name: getattr(deployment, name) for name in Deployment.__slots__}))
        try:
            self._s.flush()
        except IntegrityError as exc:
            raise ConflictError("deployment_exists", f"a deployment named {deployment.name!r} exists") from exc

    def get_deployment(self, deployment_id: str, *, for_update: bool = False) -> Deployment | None:
        row = self._s.get(DeploymentRow, deployment_id, with_for_update=for_update, populate_existing=for_update)
        return None if row is None else _deployment(row)

    def find_deployment(self, name: str) -> Deployment | None:
        row = self._s.scalar(select(DeploymentRow).where(DeploymentRow.name == name))
        return None if row is None else _deployment(row)

    def list_deployments(
        self, *, app: str | None = None, states: Collection[str] | None = None, limit: int = 1000
    ) -> list[Deployment]:
        query = select(DeploymentRow).order_by(DeploymentRow.created_at, DeploymentRow.id).limit(limit)
        if app is not None:
            query = query.where(DeploymentRow.app == app)
        if states is not None:
            query = query.where(DeploymentRow.state.in_(list(states)))
        return [_deployment(row) for row in self._s.scalars(query)]

    def update_deployment(self, deployment_id: str, **values: Any) -> Deployment:
        row = self._s.get(DeploymentRow, deployment_id, with_for_update=True)
        if row is None:
            raise KeyError(deployment_id)
        for name, value in values.items():
            setattr(row, name, value)
        self._s.flush()
        return _deployment(row)

    # --- members -------------------------------------------------------------------------

    def list_members(self, deployment_id: str) -> list[DeploymentMember]:
        """Every device the deployment's rollout assigned, read as plain rows (a pass reads them all, often)."""
        query = select(*_MEMBER_COLUMNS).where(DeploymentMemberRow.deployment_id == deployment_id)
        rows = self._s.execute(query.order_by(DeploymentMemberRow.device_id))
        return [DeploymentMember(*row) for row in rows]

    def members_of_device(self, device_id: str) -> list[DeploymentMember]:
        query = select(DeploymentMemberRow).where(DeploymentMemberRow.device_id == device_id)
        return [_member(row) for row in self._s.scalars(query.order_by(DeploymentMemberRow.deployment_id))]

    def insert_member(self, member: DeploymentMember) -> None:
        """Record that the rollout assigned the device; a second insert for the same pair is refused."""
        self._s.add(DeploymentMemberRow(**{name: getattr(member, name) for name in DeploymentMember.__slots__}))
        try:
            self._s.flush()
        except IntegrityError as exc:
            raise ConflictError("already_assigned", f"{member.device_id} is already in the rollout") from exc

    def insert_members(self, members: Sequence[DeploymentMember]) -> None:
        """Record many members at once; any pair already recorded refuses the whole batch."""
        for start in range(0, len(members), 1000):
            chunk = members[start : start + 1000]
            rows = [{n: getattr(m, n) for n in DeploymentMember.__slots__} for m in chunk]
            try:
                self._s.execute(insert(DeploymentMemberRow), rows)
            except IntegrityError as exc:
                raise ConflictError("already_assigned", "a device is already in the rollout") from exc

    def set_member_status(self, deployment_id: str, device_id: str, status: str) -> None:
        self._s.execute(
            update(DeploymentMemberRow)
            .where(DeploymentMemberRow.deployment_id == deployment_id, DeploymentMemberRow.device_id == device_id)
            .values(status=status)
        )

    def update_member(self, deployment_id: str, device_id: str, **values: Any) -> None:
        self._s.execute(
            update(DeploymentMemberRow)
            .where(DeploymentMemberRow.deployment_id == deployment_id, DeploymentMemberRow.device_id == device_id)
            .values(**values)
        )

    def delete_members(self, deployment_id: str) -> None:
        self._s.execute(delete(DeploymentMemberRow).where(DeploymentMemberRow.deployment_id == deployment_id))

    def mark_fetched(self, fetched: dict[str, datetime]) -> None:
        """Devices fetched new signed assignments (device -> when): their members not yet fetched are now downloading.

        Only members assigned by then (`assigned_at`): a fetch noted before a member's
        assignment was of the targets before it. This compares the clocks of two hub processes
        (the scheduler's, the answering one's), which must agree, as token and metadata expiry
        already require; a device fetches its new targets a round trip and a verification after
        its assignment commits. `_BATCH` devices a statement.
        """
        member = DeploymentMemberRow
        statement = (
            update(member)
            .where(
                member.device_id == bindparam("device"),
                member.fetched_at.is_(None),
                member.assigned_at <= bindparam("at"),
            )
            .values(fetched_at=bindparam("at"))
            .execution_options(synchronize_session=False)
        )
        rows = [{"device": device_id, "at": at} for device_id, at in sorted(fetched.items())]
        for start in range(0, len(rows), _BATCH):
            self._s.connection().execute(statement, rows[start : start + _BATCH])

    # --- what the scheduler reads of devices ---------------------------------------------------

    def fleet_devices(
        self, device_ids: Sequence[str] | None
    ) -> list[tuple[str, str, dict[str, str], str, str, dict[str, Any]]]:
        """(id, fleet, tags, arch, status, reported) of these devices (None: every accepted one), in id order."""
        query = select(
            DeviceRow.id, DeviceRow.fleet, DeviceRow.tags, DeviceRow.arch, DeviceRow.status, DeviceRow.reported
        ).order_by(DeviceRow.id)
        if device_ids is None:
            return [_fleet_row(r) for r in self._s.execute(query.where(DeviceRow.status == "accepted"))]
        rows: list[tuple[str, str, dict[str, str], str, str, dict[str, Any]]] = []
        for start in range(0, len(device_ids), _BATCH):
            chunk = list(device_ids[start : start + _BATCH])
            rows.extend(_fleet_row(r) for r in self._s.execute(query.where(DeviceRow.id.in_(chunk))))
        return rows

    def fleet_outcomes(self, device_ids: Sequence[str]) -> list[tuple[str, str, str, str]]:
        """(device id, app, status, to_release) of these devices' latest update outcomes."""
        outcome = DeviceUpdateRow
        query = select(outcome.device_id, outcome.app, outcome.status, outcome.to_release)
        rows: list[tuple[str, str, str, str]] = []
        for start in range(0, len(device_ids), _BATCH):
            chunk = list(device_ids[start : start + _BATCH])
            found = self._s.execute(query.where(outcome.device_id.in_(chunk)))
            rows.extend((r[0], r[1], r[2], r[3]) for r in found)
        return rows

    def members_last_seen(self, deployment_id: str) -> dict[str, datetime | None]:
        """When each device the deployment's rollout assigned that has not finished (or left) was last heard from."""
        query = (
            select(DeploymentMemberRow.device_id, DeviceRow.last_seen_at)
            .join(DeviceRow, DeviceRow.id == DeploymentMemberRow.device_id)
            .where(
                DeploymentMemberRow.deployment_id == deployment_id,
                DeploymentMemberRow.status.in_(("assigned", "downloading", "left")),
            )
        )
        return {r[0]: r[1] for r in self._s.execute(query)}

    def outcomes_for_app(self, app: str) -> dict[str, tuple[str, str]]:
        """Device id -> (status, to_release) of each device's latest update outcome for `app`."""
        query = select(DeviceUpdateRow.device_id, DeviceUpdateRow.status, DeviceUpdateRow.to_release).where(
            DeviceUpdateRow.app == app
        )
        return {r[0]: (r[1], r[2]) for r in self._s.execute(query)}

    def assignments_for_app(self, app: str) -> dict[str, tuple[str, str]]:
        """Device id -> (version, who assigned it as text: `str(AssignedBy)`) of every assignment of `app`."""
        query = select(AssignmentRow.device_id, AssignmentRow.version, AssignmentRow.assigned_by).where(
            AssignmentRow.app == app
        )
        return {r[0]: (r[1], r[2]) for r in self._s.execute(query)}
