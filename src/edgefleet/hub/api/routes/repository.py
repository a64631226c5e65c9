"""Operator routes for the hub's image repository: the online keys a publisher needs, and root metadata."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path

from edgefleet.hub.api.deps import HubDep, OperatorDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import OnlineKeys, RootAccepted
from edgefleet.hub.services import repository
from edgefleet.hub.services.operators import authorize

router = APIRouter(prefix="/repository", tags=["repository"], responses=ERRORS)


@router.get("/online-keys", response_model=OnlineKeys)
def online_keys(hub: HubDep, operator: OperatorDep) -> OnlineKeys:
    """Public keys of the hub's online roles (director, snapshot, timestamp); never private material."""
    authorize(operator, "viewer", action="repository.online-keys")
    return OnlineKeys.model_validate(hub.keys.online_public)


@router.post("/root", response_model=RootAccepted, status_code=201)
def push_root(
    hub: HubDep, operator: OperatorDep, body: Annotated[dict[str, Any], Body(description="Signed root metadata")]
) -> RootAccepted:
    """Add a root version: the first on trust (admin), later ones signed by the current root's threshold too."""
    root = repository.push_root(hub, operator, body)
    return RootAccepted(version=root.version, expires=root.expires)


@router.get("/root", response_model=dict[str, Any])
def latest_root(hub: HubDep, operator: OperatorDep) -> dict[str, Any]:
    """The newest root, exactly as signed."""
    return repository.get_root(hub, operator, None)


@router.get("/root/{version}", response_model=dict[str, Any])
def root_version(
    hub: HubDep, operator: OperatorDep, version: Annotated[int, Path(ge=1, le=repository.MAX_ROOT_VERSION)]
) -> dict[str, Any]:
    """One root version, exactly as signed (devices walk these to rotate keys)."""
    return repository.get_root(hub, operator, version)
