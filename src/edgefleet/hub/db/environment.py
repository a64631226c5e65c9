"""Queries on environment variables of fleets and devices (part of `Tx`), and the lock their writers take."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import bindparam, delete, func, literal, select, text, union_all

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import (
    DeviceEnvironmentRow,
    DeviceRow,
    FleetEnvironmentRow,
)
from edgefleet.hub.notify import answers_key
from edgefleet.hub.records import EnvScope

_BOTH_SCOPES = union_all(
    select(literal(0), FleetEnvironmentRow.name, FleetEnvironmentRow.value).where(
        FleetEnvironmentRow.fleet == bindparam("fleet")
    ),
    select(literal(1), DeviceEnvironmentRow.name, DeviceEnvironmentRow.value).where(
        DeviceEnvironmentRow.device_id == bindparam("device")
    ),
).order_by(text("1"), text("2"))
"""(0 for the fleet's, 1 for the device's, name, value) of one device's two scopes, in scope and name order."""
_PG_ENVIRONMENT_LOCK = 0x6564676572656E76
"""Transaction-scoped advisory lock serialising writers of environment variables (their bounds span scopes)."""


class EnvironmentQueries(TxBase):
    """Mixed into `Tx`."""

    @staticmethod
    def _env_owner(scope: EnvScope) -> Any:
        return FleetEnvironmentRow.fleet if scope == "fleet" else DeviceEnvironmentRow.device_id

    def environments_of(self, fleet: str, device_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """The variables set for the fleet and for the device, each in name order, in one statement."""
        found: tuple[dict[str, str], dict[str, str]] = ({}, {})
        for scope, name, value in self._s.execute(_BOTH_SCOPES, {"fleet": fleet, "device": device_id}):
            found[scope][name] = value
        return found

    def get_environment(self, scope: EnvScope, owner: str) -> dict[str, str]:
        """Variables set at one scope (`owner` is the fleet's name or the device's id), in name order."""
        row = FleetEnvironmentRow if scope == "fleet" else DeviceEnvironmentRow
        query = select(row.name, row.value).where(self._env_owner(scope) == owner).order_by(row.name)
        return {row.name: row.value for row in self._s.execute(query)}

    def put_environment(self, scope: EnvScope, owner: str, values: dict[str, str]) -> None:
        """Set (insert or overwrite) variables at one scope."""
        if values:
            self._changes(None if scope == "fleet" else answers_key(owner))
        for name, value in values.items():
            if scope == "fleet":
                fleet_row = self._s.get(FleetEnvironmentRow, (owner, name))
                if fleet_row is None:
                    self._s.add(FleetEnvironmentRow(fleet=owner, name=name, value=value))
                else:
                    fleet_row.value = value
            else:
                device_row = self._s.get(DeviceEnvironmentRow, (owner, name))
                if device_row is None:
                    self._s.add(DeviceEnvironmentRow(device_id=owner, name=name, value=value))
                else:
                    device_row.value = value
        self._s.flush()

    def delete_environment(self, scope: EnvScope, owner: str, names: Collection[str]) -> None:
        """Remove variables from one scope (names not set are ignored)."""
        if not names:
            return
        self._changes(None if scope == "fleet" else answers_key(owner))
        row = FleetEnvironmentRow if scope == "fleet" else DeviceEnvironmentRow
        self._s.execute(delete(row).where(self._env_owner(scope) == owner, row.name.in_(list(names))))
        self._s.flush()

    def max_device_environment_beyond(self, fleet: str, names: Collection[str]) -> int:
        """The most variables any one device of `fleet` sets under names outside `names` (0 when none)."""
        count = func.count(DeviceEnvironmentRow.name)
        query = (
            select(count)
            .join(DeviceRow, DeviceRow.id == DeviceEnvironmentRow.device_id)
            .where(DeviceRow.fleet == fleet)
            .group_by(DeviceEnvironmentRow.device_id)
            .order_by(count.desc())
            .limit(1)
        )
        if names:
            query = query.where(DeviceEnvironmentRow.name.not_in(list(names)))
        return int(self._s.scalar(query) or 0)

    def lock_environment(self) -> None:
        """Serialise writers of environment variables until this transaction ends.

        A fleet's variables and each device's together must stay within the bounds, so
        two concurrent writers must not both check against the old values. SQLite already
        holds its one write lock (BEGIN IMMEDIATE); PostgreSQL takes an advisory lock.
        """
        self._advisory_lock(_PG_ENVIRONMENT_LOCK)
