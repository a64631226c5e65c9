"""Operator routes for the hub's TUF repositories; for now the online public keys a publisher needs."""

from __future__ import annotations

from fastapi import APIRouter

from edgefleet.hub.api.deps import HubDep, OperatorDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import OnlineKeys
from edgefleet.hub.services.operators import authorize

router = APIRouter(prefix="/repository", tags=["repository"], responses=ERRORS)


@router.get("/online-keys", response_model=OnlineKeys)
def online_keys(hub: HubDep, operator: OperatorDep) -> OnlineKeys:
    """Public keys of the hub's online roles (director, snapshot, timestamp); never private material."""
    authorize(operator, "viewer", action="repository.online-keys")
    return OnlineKeys.model_validate(hub.keys.online_public)
