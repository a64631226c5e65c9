"""TUF routes: the image repository (operators, accepted devices, or anyone when public) and each device's director.

Names follow the TUF specification so that stock clients work: ``METADATA_BASE/N.root.json``,
``timestamp.json``, ``N.snapshot.json``, ``N.targets.json`` and ``TARGETS_BASE/DIR/SHA256.NAME``.
Artifacts are served with HTTP range support so interrupted downloads resume.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from fastapi.responses import FileResponse

from edgefleet.hub.api.deps import Credentials, DeviceDep, HubDep, current_caller
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.services import director, metadata
from edgefleet.hub.services.devices import DeviceCaller
from edgefleet.hub.services.operators import Operator

PREFIX = "/tuf"
DIRECTOR_FILE = "/director/{name}"
REPOSITORY_FILE = "/repository/{name}"
REPOSITORY_TARGET = "/repository/targets/{path:path}"
"""The three routes `api.tuflane` answers itself when this process holds what they need."""
MAX_NAME = 64
MAX_TARGET_PATH = 512
router = APIRouter(prefix=PREFIX, tags=["tuf"], responses=ERRORS)
MetadataName = Annotated[
    str, Path(max_length=MAX_NAME, description="TUF file name, e.g. 3.root.json, timestamp.json or 2.ROLE.json")
]
JSON = "application/json"
ARTIFACT = "application/octet-stream"


async def optional_caller(hub: HubDep, credentials: Credentials) -> Operator | DeviceCaller | None:
    """The caller, or None without credentials (allowed only when the repository is public)."""
    if credentials is None:
        return None
    return await current_caller(hub, credentials)


ReaderDep = Annotated[Operator | DeviceCaller | None, Depends(optional_caller)]


def metadata_response(body: bytes, name: str) -> Response:
    """A metadata file's answer. The timestamp changes all the time; versioned files never do."""
    cache = "no-store" if not name[0].isdigit() else "public, max-age=31536000, immutable"
    return Response(body, media_type=JSON, headers={"Cache-Control": cache})


@router.get(REPOSITORY_TARGET, response_class=FileResponse)
def repository_target(
    hub: HubDep, caller: ReaderDep, path: Annotated[str, Path(max_length=MAX_TARGET_PATH)]
) -> FileResponse:
    """An artifact by its consistent-snapshot name ``DIR/SHA256.NAME`` (Range requests supported)."""
    return FileResponse(metadata.artifact(hub, caller, path), media_type=ARTIFACT)


@router.get(REPOSITORY_FILE, response_class=Response)
def repository_metadata(hub: HubDep, caller: ReaderDep, name: MetadataName) -> Response:
    """Image repository metadata by TUF name."""
    return metadata_response(metadata.read(hub, caller, name), name)


@router.get(DIRECTOR_FILE, response_class=Response)
def director_metadata(hub: HubDep, caller: DeviceDep, name: MetadataName) -> Response:
    """The calling device's director metadata by TUF name (root is shared by all devices)."""
    return metadata_response(director.read(hub, caller.device, name), name)
