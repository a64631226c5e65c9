"""Queries on devices' events (part of `Tx`): what was acknowledged, each app's latest update outcome."""

from __future__ import annotations

from sqlalchemy import select

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import (
    DeviceEventCursorRow,
    DeviceUpdateRow,
)
from edgefleet.hub.records import UpdateOutcome


def _update_outcome(row: DeviceUpdateRow) -> UpdateOutcome:
    return UpdateOutcome(**{name: getattr(row, name) for name in UpdateOutcome.__slots__})


class DeviceEventQueries(TxBase):
    """Mixed into `Tx`."""

    def events_acknowledged(self, device_id: str) -> int:
        """The highest event number recorded for the device (0 when none was)."""
        row = self._s.get(DeviceEventCursorRow, device_id)
        return 0 if row is None else row.acknowledged

    def acknowledge_events(self, device_id: str, seq: int) -> None:
        row = self._s.get(DeviceEventCursorRow, device_id)
        if row is None:
            self._s.add(DeviceEventCursorRow(device_id=device_id, acknowledged=seq))
        else:
            row.acknowledged = seq
        self._s.flush()

    def put_update_outcome(self, outcome: UpdateOutcome) -> None:
        """Replace the device's latest outcome for the outcome's app (announced: the rollout scheduler judges it)."""
        self._changes(outcome.device_id)
        values = {name: getattr(outcome, name) for name in UpdateOutcome.__slots__}
        self._put(DeviceUpdateRow, (outcome.device_id, outcome.app), values)

    def list_update_outcomes(self, device_id: str) -> list[UpdateOutcome]:
        query = select(DeviceUpdateRow).where(DeviceUpdateRow.device_id == device_id).order_by(DeviceUpdateRow.app)
        return [_update_outcome(row) for row in self._s.scalars(query)]
