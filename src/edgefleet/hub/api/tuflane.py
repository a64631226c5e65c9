"""The device fast lane's TUF answers: the metadata files and artifacts of an update, from this process's memory.

An update's verification asks the hub for a dozen files, most of which never change once
stored (versioned metadata, artifacts named by their digest) or change rarely (the roots and
the image repository's timestamp, whose newest versions every process forgets on any
process's commit of new metadata). `answer` decides, without I/O and through the services'
own functions (`director.read_held`, `metadata.read_held`, `metadata.held_artifact`), what
the routes in `routes.tuf` would answer an accepted device: the same answer objects
(`routes.tuf.metadata_response`, a `FileResponse`, `answers.hub_error_response`). When this
process does not hold what the answer needs, the answer is read as the route reads it (in
the thread pool, by the same service functions); a request the route would refuse by its
parameters' shape (a name too long, a nested one) is left to the route.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import FileResponse, Response

from edgefleet.hub.api.answers import hub_error_response
from edgefleet.hub.api.routes import tuf as routes
from edgefleet.hub.context import Hub
from edgefleet.hub.errors import HubError, NotFoundError
from edgefleet.hub.services import director, metadata
from edgefleet.hub.services.devices import DeviceCaller
from edgefleet.protocol import API_PREFIX

PREFIX = API_PREFIX + routes.PREFIX + "/"
KEPT_ARTIFACT_BYTES = 64 * 1024
"""Artifacts up to this size (releases' manifests) are kept in memory once read (`Hub.artifact_bodies`)."""
_DIRECTOR = API_PREFIX + routes.PREFIX + routes.DIRECTOR_FILE.removesuffix("{name}")
_TARGETS = API_PREFIX + routes.PREFIX + routes.REPOSITORY_TARGET.removesuffix("{path:path}")
_REPOSITORY = API_PREFIX + routes.PREFIX + routes.REPOSITORY_FILE.removesuffix("{name}")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the lane answers, and the route template the request metrics count it under.

    `response` when this process holds it; else `read`, which makes it as the route would
    (blocking: run in the thread pool) and raises the route's `HubError`s.
    """

    template: str
    response: Response | None = None
    read: Callable[[], Response] | None = None


def _route_of(path: str) -> tuple[str, str] | None:
    """(route, the rest of the path) of a TUF `path` the lane may answer; None: the app's (another path, odd shape)."""
    for prefix, route, longest in (
        (_TARGETS, routes.REPOSITORY_TARGET, routes.MAX_TARGET_PATH),
        (_DIRECTOR, routes.DIRECTOR_FILE, routes.MAX_NAME),
        (_REPOSITORY, routes.REPOSITORY_FILE, routes.MAX_NAME),
    ):
        if path.startswith(prefix):
            rest = path.removeprefix(prefix)
            if not 0 < len(rest) <= longest or (route != routes.REPOSITORY_TARGET and "/" in rest):
                return None
            return route, rest
    return None


def template(path: str) -> str | None:
    """The route template of a TUF `path` the lane may answer; None: the app's (another path, or one of odd shape)."""
    found = _route_of(path)
    return None if found is None else API_PREFIX + routes.PREFIX + found[0]


def answer(hub: Hub, caller: DeviceCaller, path: str, *, ranged: bool) -> Answer | None:
    """The routes' answer to an accepted device's GET of `path` (no query); None: not one the lane can give.

    `ranged`: the request asks for a range (an artifact's is then always read as the route reads it).
    """
    found = _route_of(path)
    if found is None:
        return None
    route, name = found
    template = API_PREFIX + routes.PREFIX + route
    if route == routes.REPOSITORY_TARGET:
        return Answer(template, read=lambda: _artifact(hub, caller, name, whole=not ranged))
    directors = route == routes.DIRECTOR_FILE

    def read() -> Response:
        body = director.read(hub, caller.device, name) if directors else metadata.read(hub, caller, name)
        return routes.metadata_response(body, name)

    try:
        held = director.read_held(hub, caller.device, name) if directors else metadata.read_held(hub, name)
    except HubError as exc:
        return Answer(template, hub_error_response(exc))
    return Answer(template, read=read) if held is None else Answer(template, routes.metadata_response(held, name))


def _artifact(hub: Hub, caller: DeviceCaller, target: str, *, whole: bool) -> Response:
    """The artifact's answer (blocking): the file the device may fetch, as the route finds it, with its `os.stat`.

    `whole` (no range asked): a small file's body comes from memory (`_file_answer`).

    Raises:
        HubError: as `metadata.artifact` (not assigned, no such artifact).
    """
    held = metadata.held_artifact(hub, caller.device, target)
    if held is not None and (found := _stat(held)) is not None:
        return _file_answer(hub, held, found, whole=whole)
    file = metadata.artifact(hub, caller, target)
    found = _stat(file)
    if found is None:  # gone since `artifact` looked
        raise NotFoundError("artifact_not_found", "no such artifact")
    return _file_answer(hub, file, found, whole=whole)


def _file_answer(hub: Hub, file: Path, found: os.stat_result, *, whole: bool) -> Response:
    """The route's `FileResponse`; a small file `whole`: its body as this process keeps it, else read and kept.

    The body is kept by the file's path and stat (as `FileResponse` states them in its headers):
    artifacts are stored under their digest and never rewritten, so this is what the route
    would send, without opening the file and three hops to the thread pool (blocking: a read).
    """
    response = FileResponse(file, media_type=routes.ARTIFACT, stat_result=found)
    if not whole or found.st_size > KEPT_ARTIFACT_BYTES:
        return response
    kept = hub.artifact_bodies.get(str(file))
    if kept is not None and kept[1] == response.raw_headers:
        return _kept_response(*kept)
    ticket = hub.artifact_bodies.ticket()
    try:
        body = file.read_bytes()
    except OSError:
        return response
    # Stored under its digest: kept only when the bytes are the ones named (and the size the one stated).
    if len(body) != found.st_size or hashlib.sha256(body).hexdigest() != file.name:
        return response
    hub.artifact_bodies.put(str(file), (body, response.raw_headers), ticket)
    return _kept_response(body, response.raw_headers)


def _kept_response(body: bytes, headers: list[tuple[bytes, bytes]]) -> Response:
    """A kept artifact's body with the headers its `FileResponse` had (length, type, time, entity tag)."""
    response = Response(body)
    response.raw_headers = list(headers)
    return response


def _stat(file: Path) -> os.stat_result | None:
    """The file's `os.stat` if it is a regular file (blocking)."""
    try:
        found = file.stat()
    except OSError:
        return None
    return found if stat.S_ISREG(found.st_mode) else None
