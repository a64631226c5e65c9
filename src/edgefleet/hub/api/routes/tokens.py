"""Operator routes for enrollment tokens: create, list, revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path

from edgefleet.hub.api.deps import HubDep, LimitDep, OperatorDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import TokenCreate, TokenCreated, TokenOut
from edgefleet.hub.services import enrollment

router = APIRouter(prefix="/enrollment-tokens", tags=["enrollment"], responses=ERRORS)
TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]


@router.post("", response_model=TokenCreated, status_code=201)
def create_token(hub: HubDep, operator: OperatorDep, body: TokenCreate) -> TokenCreated:
    """Create an enrollment token (operator); the secret is in the answer and nowhere else."""
    token, secret = enrollment.create_token(
        hub,
        operator,
        fleet=body.fleet,
        tags=dict(body.tags),
        max_uses=body.uses,
        ttl=timedelta(seconds=body.ttl_seconds),
        require_approval=body.require_approval,
    )
    return TokenCreated(**TokenOut.model_validate(token).model_dump(), token=secret)


@router.get("", response_model=list[TokenOut])
def list_tokens(hub: HubDep, operator: OperatorDep, limit: LimitDep) -> list[TokenOut]:
    """Enrollment tokens (metadata only)."""
    return [TokenOut.model_validate(t) for t in enrollment.list_tokens(hub, operator, limit=limit)]


@router.delete("/{token_id}", response_model=TokenOut)
def revoke_token(hub: HubDep, operator: OperatorDep, token_id: TokenId) -> TokenOut:
    """Revoke an enrollment token (operator)."""
    return TokenOut.model_validate(enrollment.revoke_token(hub, operator, token_id=token_id))
