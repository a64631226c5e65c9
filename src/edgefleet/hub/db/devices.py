"""Queries on the device registry (part of `Tx`): enrolled devices, their keys, status and twin."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import flag_modified

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import DeviceRow
from edgefleet.hub.errors import ConflictError
from edgefleet.hub.records import Device

_UNANNOUNCED_COLUMNS = frozenset({"last_seen_at", "updated_at"})
"""Device columns whose change alone is not announced: every other one is in a device's answers or its cached record."""


def _differs(old: Any, new: Any) -> bool:
    """Whether a column's value changes; JSON values compared as JSON (`1` is not `true` to a reader of the twin)."""
    if isinstance(old, dict | list) or isinstance(new, dict | list):
        return json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True)
    return bool(old != new)


_DEVICE_COLUMNS = tuple(getattr(DeviceRow, name) for name in Device.__slots__)
"""Selected as ORM attributes, so pending changes of the session are flushed first (no objects are built)."""
_DEVICE = select(*_DEVICE_COLUMNS).where(DeviceRow.id == bindparam("device"))
"""Built once: the device path reads records often, and building a statement costs more than running it."""
_STATUS_FOR_UPDATE = select(DeviceRow.status).where(DeviceRow.id == bindparam("device")).with_for_update()


def _device_of(values: Mapping[str, Any]) -> Device:
    return Device(
        **{name: values[name] for name in Device.__slots__}
        | {
            "tags": dict(values["tags"]),
            "reported": dict(values["reported"]),
        }
    )


def _device(row: DeviceRow) -> Device:
    return _device_of({name: getattr(row, name) for name in Device.__slots__})


class DeviceQueries(TxBase):
    """Mixed into `Tx`."""

    def insert_device(self, device: Device) -> None:
        self._changes(device.id)  # the fleet view (`hub.fleetview`) learns of new devices this way
        self._s.add(DeviceRow(**{name: getattr(device, name) for name in Device.__slots__}))
        self._flush_device()

    def _flush_device(self) -> None:
        try:
            self._s.flush()
        except IntegrityError as exc:
            # The partial unique index on active keys: a concurrent enrollment won the race.
            raise ConflictError("key_already_enrolled", "this key already belongs to an enrolled device") from exc

    def get_device(self, device_id: str, *, for_update: bool = False) -> Device | None:
        """The device; with `for_update`, its row locked (PostgreSQL) and re-read for a read-modify-write.

        Without, one plain statement (no ORM object: the device path reads records often).
        """
        if not for_update:
            found = self._s.execute(_DEVICE, {"device": device_id}).first()
            return None if found is None else _device_of(found._asdict())
        row = self._s.get(DeviceRow, device_id, with_for_update=True, populate_existing=True)
        return None if row is None else _device(row)

    def lock_device_status(self, device_id: str) -> str | None:
        """The device's status, its row locked until the transaction ends (PostgreSQL); None: no such device."""
        status: str | None = self._s.execute(_STATUS_FOR_UPDATE, {"device": device_id}).scalar()
        return status

    def list_devices(self, *, fleet: str | None, status: str | None, after: str | None, limit: int) -> list[Device]:
        query = select(DeviceRow).order_by(DeviceRow.id).limit(limit)
        if fleet is not None:
            query = query.where(DeviceRow.fleet == fleet)
        if status is not None:
            query = query.where(DeviceRow.status == status)
        if after is not None:
            query = query.where(DeviceRow.id > after)
        return [_device(row) for row in self._s.scalars(query)]

    def find_active_device_by_key(self, fingerprint: str, *, statuses: Sequence[str]) -> Device | None:
        query = (
            select(DeviceRow).where(DeviceRow.key_fingerprint == fingerprint, DeviceRow.status.in_(statuses)).limit(1)
        )
        row = self._s.scalar(query)
        return None if row is None else _device(row)

    def update_device(self, device_id: str, **values: Any) -> Device:
        row = self._s.get(DeviceRow, device_id, with_for_update=True)
        if row is None:
            raise KeyError(device_id)
        changed = {name for name, value in values.items() if _differs(getattr(row, name), value)}
        if changed - _UNANNOUNCED_COLUMNS:
            self._changes(device_id)
        for name, value in values.items():
            setattr(row, name, value)
            if name in changed and isinstance(value, dict | list):
                flag_modified(row, name)  # SQLAlchemy compares with ==, where 1 == True: it would skip the write
        self._flush_device()
        return _device(row)
