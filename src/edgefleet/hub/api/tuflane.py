"""The device fast lane's TUF answers: the metadata files and artifacts of an update, from this process's memory.

An update's verification asks the hub for a dozen files, most of which never change once
stored (versioned metadata, artifacts named by their digest) or change rarely (the roots and
the image repository's timestamp, whose newest versions every process forgets on any
process's commit of new metadata). `answer` decides, without I/O and through the services'
own functions (`director.read_held`, `metadata.read_held`, `metadata.held_artifact`), what
the routes in `routes.tuf` would answer an accepted device: the same answer objects
(`routes.tuf.metadata_response`, a `FileResponse`, `answers.hub_error_response`). When this
process does not hold what the answer needs, it says so (None) and the route answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import FileResponse, Response

from edgefleet.hub.api.answers import hub_error_response
from edgefleet.hub.api.routes import tuf as routes
from edgefleet.hub.context import Hub
from edgefleet.hub.errors import HubError
from edgefleet.hub.services import director, metadata
from edgefleet.hub.services.devices import DeviceCaller
from edgefleet.protocol import API_PREFIX

PREFIX = API_PREFIX + routes.PREFIX + "/"
_DIRECTOR = API_PREFIX + routes.PREFIX + routes.DIRECTOR_FILE.removesuffix("{name}")
_TARGETS = API_PREFIX + routes.PREFIX + routes.REPOSITORY_TARGET.removesuffix("{path:path}")
_REPOSITORY = API_PREFIX + routes.PREFIX + routes.REPOSITORY_FILE.removesuffix("{name}")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the lane answers, and the route template the request metrics count it under."""

    template: str
    response: Response | None = None
    file: Path | None = None
    """An artifact (`response` is None): answered by `artifact_response` once found on disk, else by the route."""


def artifact_response(file: Path, found: os.stat_result) -> FileResponse:
    """The artifact's answer as the route gives it, from its file's `os.stat`."""
    return FileResponse(file, media_type=routes.ARTIFACT, stat_result=found)


def answer(hub: Hub, caller: DeviceCaller, path: str) -> Answer | None:
    """The routes' answer to an accepted device's GET of `path` (no query), when this process holds it; else None."""
    if path.startswith(_TARGETS):
        target = path.removeprefix(_TARGETS)
        if not 0 < len(target) <= routes.MAX_TARGET_PATH:
            return None
        file = metadata.held_artifact(hub, caller.device, target)
        if file is None:
            return None
        return Answer(API_PREFIX + routes.PREFIX + routes.REPOSITORY_TARGET, file=file)
    if path.startswith(_DIRECTOR):
        name, template = path.removeprefix(_DIRECTOR), API_PREFIX + routes.PREFIX + routes.DIRECTOR_FILE
    elif path.startswith(_REPOSITORY):
        name, template = path.removeprefix(_REPOSITORY), API_PREFIX + routes.PREFIX + routes.REPOSITORY_FILE
    else:
        return None
    if not 0 < len(name) <= routes.MAX_NAME or "/" in name:
        return None
    try:
        if template.endswith(routes.DIRECTOR_FILE):
            body = director.read_held(hub, caller.device, name)
        else:
            body = metadata.read_held(hub, name)
    except HubError as exc:
        return Answer(template, hub_error_response(exc))
    return None if body is None else Answer(template, routes.metadata_response(body, name))
