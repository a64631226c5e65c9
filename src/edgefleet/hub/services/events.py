"""Device events: a device's buffered update outcomes, each recorded once in the audit log and as its latest per app.

The device numbers its events (`seq`, increasing, never reused) and re-sends a batch
whose answer it did not get. The hub keeps, per device, the highest `seq` it recorded:
events up to it are skipped, so a re-sent batch is recorded once. A batch is one
transaction: its audit entries, outcomes and the new highest `seq` commit together.
"""

from __future__ import annotations

from typing import Any

from edgefleet.hub import audit
from edgefleet.hub.context import Hub
from edgefleet.hub.errors import ForbiddenError
from edgefleet.hub.records import UpdateOutcome
from edgefleet.hub.services.audit import record
from edgefleet.hub.services.devices import DeviceCaller, claim_token_locking
from edgefleet.protocol import DeviceEvent, DeviceEvents, EventsAck


def audit_detail(event: DeviceEvent) -> dict[str, Any]:
    """The event as an audit entry's detail, within the audit log's bound (pure).

    Logs lose their oldest lines first, then the reason its end, and `truncated` says so;
    the latest outcome per app keeps them whole.
    """
    detail: dict[str, Any] = {
        "app": event.app,
        "from_release": event.from_release,
        "to_release": event.to_release,
        "service": event.service,
        "reason": event.reason,
        "logs": event.logs,
        "seq": event.seq,
        "at": event.at.isoformat(),
    }
    if len(audit.canonical(detail)) <= audit.MAX_DETAIL_BYTES:
        return detail
    detail["truncated"] = True
    for name, keep_end in (("logs", True), ("reason", False)):
        excess = len(audit.canonical(detail)) - audit.MAX_DETAIL_BYTES
        text = detail[name]
        if excess <= 0 or not text:
            continue
        # Each character is at least one byte of canonical JSON, so cutting `excess` of them is enough.
        kept = max(len(text) - excess, 0)
        detail[name] = text[len(text) - kept :] if keep_end else text[:kept]
    return detail


def record_events(hub: Hub, caller: DeviceCaller, batch: DeviceEvents) -> EventsAck:
    """Record the events of `batch` the hub has not recorded yet; answer the highest `seq` recorded.

    Each new event becomes an audit entry ``device.update.<status>`` with the device as actor
    and target, and the device's latest outcome for its app. A `dropped` count is audited
    (``device.events.dropped``) unless the batch is a re-send (events, all recorded before).

    Raises:
        ForbiddenError: the device was revoked meanwhile.
    """
    device_id = caller.device.id
    with hub.store.transaction() as tx:
        # The device's row lock orders concurrent batches from one device (PostgreSQL).
        if claim_token_locking(hub, tx, caller) != "accepted":
            raise ForbiddenError("device_not_accepted", "this device is no longer accepted")
        acknowledged = tx.events_acknowledged(device_id)
        fresh = [event for event in batch.events if event.seq > acknowledged]
        if batch.dropped and (fresh or not batch.events):
            record(
                hub,
                tx,
                actor=caller.actor,
                action="device.events.dropped",
                target=caller.actor,
                detail={"dropped": batch.dropped, "before_seq": fresh[0].seq if fresh else None},
            )
        for event in fresh:
            record(
                hub,
                tx,
                actor=caller.actor,
                action=f"device.update.{event.status}",
                target=caller.actor,
                detail=audit_detail(event),
            )
        if fresh:
            acknowledged = fresh[-1].seq
            tx.record_outcomes(device_id, [_outcome(device_id, event) for event in fresh], acknowledged)
    return EventsAck(acknowledged=acknowledged)


def _outcome(device_id: str, event: DeviceEvent) -> UpdateOutcome:
    return UpdateOutcome(
        device_id=device_id,
        app=event.app,
        seq=event.seq,
        at=event.at,
        status=event.status,
        from_release=event.from_release,
        to_release=event.to_release,
        service=event.service,
        reason=event.reason,
        logs=event.logs,
    )
