"""Queries on devices' events (part of `Tx`): what was acknowledged, each app's latest update outcome."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, text

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.listen import CHANNEL
from edgefleet.hub.db.models import (
    DeviceEventCursorRow,
    DeviceUpdateRow,
)
from edgefleet.hub.notify import outcome_key
from edgefleet.hub.records import UpdateOutcome

_ACKNOWLEDGED = select(DeviceEventCursorRow.acknowledged).where(DeviceEventCursorRow.device_id == bindparam("device"))


def _update_outcome(row: DeviceUpdateRow) -> UpdateOutcome:
    return UpdateOutcome(**{name: getattr(row, name) for name in UpdateOutcome.__slots__})


class DeviceEventQueries(TxBase):
    """Mixed into `Tx`."""

    def events_acknowledged(self, device_id: str) -> int:
        """The highest event number recorded for the device (0 when none was)."""
        acknowledged = self._s.connection().execute(_ACKNOWLEDGED, {"device": device_id}).scalar()
        return 0 if acknowledged is None else int(acknowledged)

    def acknowledge_events(self, device_id: str, seq: int) -> None:
        """Set the device's highest event number recorded (one upsert)."""
        statement = self._upsert(DeviceEventCursorRow, ("device_id",))
        self._s.connection().execute(statement, {"device_id": device_id, "acknowledged": seq})

    def put_update_outcome(self, outcome: UpdateOutcome) -> None:
        """Replace the device's latest outcome for the outcome's app (announced: the rollout scheduler judges it)."""
        self._changes(outcome_key(outcome.device_id))
        values = {name: getattr(outcome, name) for name in UpdateOutcome.__slots__}
        self._s.connection().execute(self._upsert(DeviceUpdateRow, ("device_id", "app")), values)

    def record_outcomes(self, device_id: str, outcomes: Sequence[UpdateOutcome], acknowledged: int) -> None:
        """`put_update_outcome` of each (in order), then `acknowledge_events`: one statement on PostgreSQL.

        There the outcomes (the last of each app), the cursor and the announcement are one
        statement of data-modifying WITHs; the device's row lock, taken before, orders batches.
        """
        if not self._postgres or not outcomes:
            for outcome in outcomes:
                self.put_update_outcome(outcome)
            self.acknowledge_events(device_id, acknowledged)
            return
        last = {outcome.app: outcome for outcome in outcomes}  # one row per app: ON CONFLICT takes each once
        rows = [{name: getattr(o, name) for name in UpdateOutcome.__slots__} for o in last.values()]
        key = outcome_key(device_id)
        self.changed.add(key)
        parameters = {"device": device_id, "acknowledged": acknowledged, "channel": CHANNEL, "key": key}
        self._s.connection().execute(_recorded(len(rows)), {**parameters, **_rows(rows)})

    def list_update_outcomes(self, device_id: str) -> list[UpdateOutcome]:
        query = select(DeviceUpdateRow).where(DeviceUpdateRow.device_id == device_id).order_by(DeviceUpdateRow.app)
        return [_update_outcome(row) for row in self._s.scalars(query)]


def _rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The outcome rows as `_recorded`'s parameters (row i's column c as ``c_i``)."""
    return {f"{name}_{i}": value for i, row in enumerate(rows) for name, value in row.items()}


@functools.lru_cache(maxsize=16)
def _recorded(count: int) -> Any:
    """`record_outcomes`'s statement for `count` outcome rows (PostgreSQL); one per app at most, so few counts.

    Plain SQL: SQLAlchemy compiles a SELECT holding data-modifying WITHs anew on every execution.
    """
    names = UpdateOutcome.__slots__
    values = ", ".join("(" + ", ".join(f":{name}_{i}" for name in names) + ")" for i in range(count))
    replaced = ", ".join(f"{name} = excluded.{name}" for name in names if name not in ("device_id", "app"))
    types = [bindparam(f"{name}_{i}", type_=_COLUMNS[name].type) for i in range(count) for name in names]
    outcomes = (
        f"INSERT INTO device_updates ({', '.join(names)}) VALUES {values} "  # noqa: S608 - column names and a count; values bound
        f"ON CONFLICT (device_id, app) DO UPDATE SET {replaced}"
    )
    return text(
        f"WITH outcomes AS ({outcomes}), acknowledged AS ({_ACKNOWLEDGE}) SELECT pg_notify(:channel, :key)"
    ).bindparams(*types)


_COLUMNS = DeviceUpdateRow.__table__.c
_ACKNOWLEDGE = (
    "INSERT INTO device_event_cursors (device_id, acknowledged) VALUES (:device, :acknowledged) "
    "ON CONFLICT (device_id) DO UPDATE SET acknowledged = excluded.acknowledged"
)
