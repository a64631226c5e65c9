"""Admin routes for operator accounts and their API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from edgefleet.hub.api.deps import HubDep, LimitDep, OperatorDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import ApiTokenCreate, ApiTokenCreated, ApiTokenOut, UserCreate, UserName, UserOut
from edgefleet.hub.services import operators

router = APIRouter(tags=["operators"], responses=ERRORS)
TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(hub: HubDep, operator: OperatorDep, body: UserCreate) -> UserOut:
    """Create an operator account (admin)."""
    return UserOut.model_validate(operators.create_user(hub, operator, name=body.name, role=body.role))


@router.get("/users", response_model=list[UserOut])
def list_users(hub: HubDep, operator: OperatorDep, limit: LimitDep) -> list[UserOut]:
    """Operator accounts (admin)."""
    return [UserOut.model_validate(u) for u in operators.list_users(hub, operator, limit=limit)]


@router.delete("/users/{name}", response_model=UserOut)
def revoke_user(hub: HubDep, operator: OperatorDep, name: Annotated[UserName, Path()]) -> UserOut:
    """Disable an account and, with it, all its tokens (admin)."""
    return UserOut.model_validate(operators.disable_user(hub, operator, name=name))


@router.post("/api-tokens", response_model=ApiTokenCreated, status_code=201)
def create_api_token(hub: HubDep, operator: OperatorDep, body: ApiTokenCreate) -> ApiTokenCreated:
    """Issue an API token for a user (admin); the secret is shown once."""
    token, secret = operators.create_api_token(
        hub, operator, user=body.user, description=body.description, ttl=body.ttl()
    )
    return ApiTokenCreated(**ApiTokenOut.model_validate(token).model_dump(), token=secret)


@router.get("/api-tokens", response_model=list[ApiTokenOut])
def list_api_tokens(
    hub: HubDep, operator: OperatorDep, limit: LimitDep, user: Annotated[UserName | None, Query()] = None
) -> list[ApiTokenOut]:
    """API token metadata (admin)."""
    return [ApiTokenOut.model_validate(t) for t in operators.list_api_tokens(hub, operator, user=user, limit=limit)]


@router.delete("/api-tokens/{token_id}", response_model=ApiTokenOut)
def revoke_api_token(hub: HubDep, operator: OperatorDep, token_id: TokenId) -> ApiTokenOut:
    """Revoke an API token (admin)."""
    return ApiTokenOut.model_validate(operators.revoke_api_token(hub, operator, token_id=token_id))
