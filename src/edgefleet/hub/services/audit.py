"""Writing to and reading the audit log; every operator action and enrollment goes through here."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgefleet.hub import audit
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.errors import HubConfigError, HubError
from edgefleet.hub.records import AuditEntry


def record(
    hub: Hub,
    tx: Tx,
    *,
    actor: str,
    action: str,
    target: str,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append an entry inside the caller's transaction, so it commits or rolls back with the action."""
    fields = audit.entry_fields(
        at=hub.clock(), actor=actor, action=action, target=target, outcome=outcome, detail=detail or {}
    )
    return tx.append_audit(fields, seal=functools.partial(audit.seal, hub.keys.audit_key))


def record_refusal(
    hub: Hub, *, actor: str, action: str, target: str, code: str, detail: dict[str, Any] | None = None
) -> None:
    """Append a refusal in its own transaction (the refused action's transaction was rolled back)."""
    with hub.store.transaction() as tx:
        record(hub, tx, actor=actor, action=action, target=target, outcome=f"refused:{code}"[:32], detail=detail)


@contextmanager
def refusals_audited(
    hub: Hub, *, actor: str, action: str, target: str, unauthenticated: bool = False
) -> Iterator[None]:
    """Audit the block's refusal: any `HubError` it raises (but a broken database) is recorded, then re-raised.

    Refusals of `unauthenticated` requests are audited within the hub's `RefusalBudget`.
    """
    try:
        yield
    except HubConfigError:
        raise
    except HubError as exc:
        detail: dict[str, Any] = {"message": exc.message[:200]}
        if unauthenticated:
            skipped = hub.refusal_budget.take(hub.clock())
            if skipped is None:
                raise
            if skipped:
                detail["unaudited_refusals_before"] = skipped
        record_refusal(hub, actor=actor, action=action, target=target, code=exc.code, detail=detail)
        raise


def list_entries(hub: Hub, *, before: int, limit: int) -> list[AuditEntry]:
    """The newest entries first, older than `before` (0 = from the head)."""
    with hub.store.transaction(readonly=True) as tx:
        return tx.list_audit(after=before, limit=limit, descending=True)


def entries_about(hub: Hub, subject: str, *, scan: int, limit: int) -> list[AuditEntry]:
    """Newest first, up to `limit` entries whose actor or target is `subject` (e.g. ``device:ID``).

    Only the newest `scan` entries are looked at (the log has no index by subject), so older
    ones are not found; read in batches of at most 1000.
    """
    found: list[AuditEntry] = []
    before, seen = 0, 0
    while seen < scan and len(found) < limit:
        batch = min(1000, scan - seen)
        with hub.store.transaction(readonly=True) as tx:
            rows = tx.list_audit(after=before, limit=batch, descending=True)
        found.extend(e for e in rows if subject in (e.actor, e.target))
        seen += len(rows)
        if len(rows) < batch:
            break
        before = rows[-1].seq
    return found[:limit]


def _head(hub: Hub) -> tuple[int, str]:
    with hub.store.transaction(readonly=True) as tx:
        return tx.audit_head()


def verify_log(hub: Hub, *, checkpoint: tuple[int, str] | None = None, attempts: int = 3) -> audit.ChainReport:
    """Verify the whole chain, then its end against the head recorded in the database.

    The head is read after the walk: if entries were appended meanwhile it is ahead of the
    walked end, and the walk is repeated (at most `attempts` times) before that is reported.
    A `checkpoint` (seq, hash) recorded earlier outside the database is checked last.
    """
    for _ in range(attempts):
        report = audit.verify(hub.store.iter_audit(), key=hub.keys.audit_key)
        head = _head(hub)
        if not report.ok or head[0] <= report.end_seq:
            break
    report = audit.check_head(report, head)
    if checkpoint is None:
        return report
    with hub.store.transaction(readonly=True) as tx:
        found = tx.list_audit(after=checkpoint[0] - 1, limit=1)
    at = found[0].hash if found and found[0].seq == checkpoint[0] else None
    return audit.check_checkpoint(report, checkpoint, at)
