"""Queries on devices' events (part of `Tx`): what was acknowledged, each app's latest update outcome."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from edgefleet.hub.db.base import TxBase
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

    def list_update_outcomes(self, device_id: str) -> list[UpdateOutcome]:
        query = select(DeviceUpdateRow).where(DeviceUpdateRow.device_id == device_id).order_by(DeviceUpdateRow.app)
        return [_update_outcome(row) for row in self._s.scalars(query)]
