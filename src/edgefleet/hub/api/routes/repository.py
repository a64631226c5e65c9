"""Operator routes for the hub's image repository: online keys, root and targets metadata, artifacts, releases."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from starlette.requests import ClientDisconnect

from edgefleet.hub import offload
from edgefleet.hub.api.deps import HubDep, LimitDep, OperatorDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import ArtifactStored, OnlineKeys, ReleaseOut, RootAccepted, TargetsAccepted
from edgefleet.hub.errors import BadRequestError
from edgefleet.hub.services import metadata, releases, repository
from edgefleet.hub.services.operators import authorize
from edgefleet.protocol import AppName
from edgefleet.releases import DELEGATED_ROLE_PATTERN

router = APIRouter(prefix="/repository", tags=["repository"], responses=ERRORS)
RoleName = Annotated[str, Path(pattern=DELEGATED_ROLE_PATTERN, description="A delegated role's name")]


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


@router.put("/artifacts/{sha256}", response_model=ArtifactStored, status_code=201)
async def upload_artifact(
    hub: HubDep,
    operator: OperatorDep,
    request: Request,
    sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the body, hex")],
) -> ArtifactStored:
    """Upload an artifact (raw body); kept only if its bytes hash to `sha256`. Idempotent."""
    upload = releases.begin_upload(hub, operator, sha256)
    try:
        async for chunk in request.stream():
            await offload.call(upload.write, chunk)
        length = await offload.call(upload.finish)
    except ClientDisconnect as exc:
        # The client went away, or the body limit cut it off (and already answered 413).
        upload.abort()
        raise BadRequestError("upload_incomplete", "the upload ended before its body did") from exc
    except BaseException:
        upload.abort()
        raise
    return ArtifactStored(sha256=sha256, length=length)


@router.post("/targets", response_model=TargetsAccepted, status_code=201)
def push_targets(
    hub: HubDep, operator: OperatorDep, body: Annotated[dict[str, Any], Body(description="Signed targets metadata")]
) -> TargetsAccepted:
    """Publish a new targets version, signed by the publisher; its artifacts must be uploaded first."""
    accepted = releases.push_targets(hub, operator, body)
    return TargetsAccepted(version=accepted.version, releases=list(accepted.releases))


@router.get("/targets", response_model=dict[str, Any])
def latest_targets(hub: HubDep, operator: OperatorDep) -> dict[str, Any]:
    """The newest targets metadata, exactly as signed."""
    parsed: dict[str, Any] = json.loads(metadata.read(hub, operator, "targets.json"))
    return parsed


@router.post("/targets/{role}", response_model=TargetsAccepted, status_code=201)
def push_delegated_targets(
    hub: HubDep,
    operator: OperatorDep,
    role: RoleName,
    body: Annotated[dict[str, Any], Body(description="Targets metadata signed by the role's keys")],
) -> TargetsAccepted:
    """Publish a new version of a delegated role's targets; the top-level targets must delegate each path to it."""
    accepted = releases.push_delegated_targets(hub, operator, role, body)
    return TargetsAccepted(version=accepted.version, releases=list(accepted.releases), role=accepted.role)


@router.get("/targets/{role}", response_model=dict[str, Any])
def latest_delegated_targets(hub: HubDep, operator: OperatorDep, role: RoleName) -> dict[str, Any]:
    """A delegated role's newest targets metadata, exactly as signed."""
    return releases.latest_delegated_targets(hub, operator, role)


@router.get("/releases", response_model=list[ReleaseOut])
def list_releases(
    hub: HubDep, operator: OperatorDep, limit: LimitDep, app: Annotated[AppName | None, Query()] = None
) -> list[ReleaseOut]:
    """Published releases, newest first per app, each saying whether it is still a target."""
    return [_release_out(listed) for listed in releases.list_releases(hub, operator, app=app, limit=limit)]


def _release_out(listed: releases.ListedRelease) -> ReleaseOut:
    fields = {name: getattr(listed.release, name) for name in ReleaseOut.model_fields if name != "current"}
    return ReleaseOut.model_validate({**fields, "current": listed.current})
