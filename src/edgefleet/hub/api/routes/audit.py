"""Operator routes for the audit log: list entries and verify the chain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from edgefleet.hub.api.deps import HubDep, LimitDep, OperatorDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import AuditOut, AuditVerifyOut
from edgefleet.hub.services import audit
from edgefleet.hub.services.operators import authorize

router = APIRouter(prefix="/audit", tags=["audit"], responses=ERRORS)


@router.get("", response_model=list[AuditOut])
def list_audit(
    hub: HubDep,
    operator: OperatorDep,
    limit: LimitDep,
    before: Annotated[int, Query(ge=0, le=2**62, description="Only entries older than this seq; 0 = newest")] = 0,
) -> list[AuditOut]:
    """Audit entries, newest first."""
    authorize(operator, "viewer", action="audit.list")
    return [AuditOut.model_validate(e) for e in audit.list_entries(hub, before=before, limit=limit)]


@router.get("/verify", response_model=AuditVerifyOut)
def verify_audit(
    hub: HubDep,
    operator: OperatorDep,
    checkpoint: Annotated[
        str | None,
        Query(pattern=r"^[1-9]\d{0,17}:[0-9a-f]{64}$", description="SEQ:HASH from an earlier verify, kept elsewhere"),
    ] = None,
) -> AuditVerifyOut:
    """Verify the whole hash chain; names the first altered, removed or inserted entry."""
    authorize(operator, "viewer", action="audit.verify")
    expected = None
    if checkpoint is not None:
        seq, _, digest = checkpoint.partition(":")
        expected = (int(seq), digest)
    report = audit.verify_log(hub, checkpoint=expected)
    return AuditVerifyOut(
        ok=report.ok,
        entries=report.entries,
        head_seq=report.end_seq,
        head_hash=report.end_hash,
        first_bad_seq=report.first_bad_seq,
        problem=report.problem,
    )
