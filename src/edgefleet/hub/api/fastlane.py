"""The device path's cache hits, answered before FastAPI's routing: target polls, unchanged reports, TUF files.

Most of what a fleet sends is a device asking for its target (answered 304 or held until it
changes) and a device reporting a state the hub already holds. When this process's caches
hold the device and its target, the answer needs no database, and FastAPI's routing and
dependency resolution would be most of its cost (issue 16). `DeviceFastLane` answers
exactly those requests itself, with the same checks the routes make, through the same
functions (`devices.admit_cached`, `devices.unchanged_by_report`, `longpoll.settle`,
`device_state`), and the same bytes, headers and statuses the routes answer.

Anything else goes to the app untouched, including every request it is unsure of: another
path or method, a query besides `wait`, headers it does not expect, a body that is not a plain
JSON report, an operator token, a device or target the caches do not hold, a report that
changes something. The routes then decide as they always have, so this lane can only ever
answer what the app would answer. It sits inside the body limit and the request metrics,
which count its answers under the routes' templates.

An update's TUF requests (metadata files and artifacts) take the same way when this
process holds what they need; `api.tuflane` decides their answers.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefleet.hub.api import longpoll, tuflane
from edgefleet.hub.api.answers import hub_error_response
from edgefleet.hub.api.routes import device as routes
from edgefleet.hub.api.schemas import TwinOut
from edgefleet.hub.context import Hub
from edgefleet.hub.errors import HubError
from edgefleet.hub.services import device_state, devices
from edgefleet.hub.services.operators import API_TOKEN_PREFIX
from edgefleet.protocol import API_PREFIX, ReportedProperties, TargetState

TARGET_PATH = API_PREFIX + routes.TARGET
REPORTED_TEMPLATE = API_PREFIX + routes.REPORTED
_REPORTED = re.compile("^" + re.escape(REPORTED_TEMPLATE).replace(re.escape("{device_id}"), "([0-9a-f-]{36})") + "$")
_WAIT = re.compile(rb"^wait=([0-9]{1,4}(?:\.[0-9]{1,6})?)$")
"""The one query the lane takes: `wait` as a plain decimal; the route parses every other spelling."""
_JSON = b"application/json"


class DeviceFastLane:
    """ASGI middleware: answers a device's target poll and unchanged report from the caches, or hands it on."""

    def __init__(self, app: ASGIApp, *, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            if method == "GET" and path == TARGET_PATH:
                if await self._target(scope, receive, send):
                    return
            elif method == "GET" and path.startswith(tuflane.PREFIX):
                if await self._tuf(scope, receive, send):
                    return
            elif method == "PATCH" and (match := _REPORTED.match(path)) is not None:
                unanswered = await self._report(scope, receive, send, match.group(1))
                if unanswered is None:
                    return
                receive = unanswered
        await self.app(scope, receive, send)

    async def _target(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a target poll whose device and target this process holds; False: the app answers it."""
        wait = _wait(scope["query_string"])
        headers = _headers(scope, b"authorization", b"if-none-match")
        if wait is None or headers is None:
            return False
        held = headers.get(b"if-none-match")
        if_none_match = None if held is None else held.decode("latin-1")
        secret = _bearer(headers.get(b"authorization"))
        if secret is None or (if_none_match is not None and len(if_none_match) > longpoll.MAX_ETAG_LENGTH):
            return False
        hub = self.hub
        caller = _admitted(hub, secret)
        if caller is None:
            return False
        device_id = caller.device.id
        first = device_state.cached_target_state(hub, device_id)
        if first is None:
            return False
        scope["route"] = _TARGET_ROUTE
        try:
            answer, tag = await longpoll.settle(
                lambda: device_state.target_state(hub, device_id),
                notifier=hub.notifier,
                device_id=device_id,
                first=first,
                peek=lambda: device_state.cached_target_state(hub, device_id),
                if_none_match=if_none_match,
                wait=wait,
                max_seconds=hub.settings.long_poll_max_seconds,
            )
        except HubError as exc:
            await hub_error_response(exc)(scope, receive, send)
            return True
        await _send_target(send, answer, tag, if_none_match)
        return True

    async def _tuf(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a device's TUF request from what this process holds; False: the app answers it."""
        headers = _headers(scope, b"authorization")
        if scope["query_string"] or headers is None:
            return False
        secret = _bearer(headers.get(b"authorization"))
        caller = None if secret is None else _admitted(self.hub, secret)
        if caller is None:
            return False
        found = tuflane.answer(self.hub, caller, scope["path"])
        if found is None:
            return False
        response = found.response
        if response is None and found.file is not None:
            on_disk = await anyio.to_thread.run_sync(_stat, found.file)
            if on_disk is None:
                return False  # the route says what is missing
            response = tuflane.artifact_response(found.file, on_disk)
        if response is None:  # pragma: no cover - an answer has a response or a file
            return False
        scope["route"] = AnsweredRoute(found.template)
        await response(scope, receive, send)
        return True

    async def _report(self, scope: Scope, receive: Receive, send: Send, device_id: str) -> Receive | None:
        """Answer a report that changes nothing; else the `receive` the app reads the same body from."""
        headers = _headers(scope, b"authorization", b"content-type", b"content-length")
        if scope["query_string"] or headers is None or headers.get(b"content-type") != _JSON:
            return receive
        declared = headers.get(b"content-length")
        if declared is None or not declared.isdigit() or int(declared) > self.hub.settings.max_body_bytes:
            return receive
        messages, body = await _read_body(receive)
        replay = _replaying(messages, receive)
        secret = _bearer(headers.get(b"authorization"))
        if body is None or secret is None:
            return replay
        properties = _properties(body)
        caller = _admitted(self.hub, secret) if properties is not None else None
        if properties is None or caller is None:
            return replay
        same = devices.unchanged_by_report(caller, device_id, properties)
        if same is None:
            return replay
        scope["route"] = _REPORTED_ROUTE
        await _send_json(send, 200, TwinOut.model_validate(same).model_dump_json(by_alias=True).encode())
        return None


@dataclass(frozen=True, slots=True)
class AnsweredRoute:
    """What `scope["route"]` holds for the request metrics when the lane answered: the route's template."""

    path: str


_TARGET_ROUTE = AnsweredRoute(TARGET_PATH)
_REPORTED_ROUTE = AnsweredRoute(REPORTED_TEMPLATE)


def _stat(file: Path) -> os.stat_result | None:
    """The file's `os.stat` if it is a regular file (blocking: run in a thread)."""
    try:
        found = file.stat()
    except OSError:
        return None
    return found if stat.S_ISREG(found.st_mode) else None


def _wait(query: bytes) -> float | None:
    """The poll's `wait` (0 when absent); None when the query is anything else."""
    if not query:
        return 0.0
    match = _WAIT.match(query)
    if match is None:
        return None
    wait = float(match.group(1))
    return wait if wait <= longpoll.MAX_WAIT_SECONDS else None


def _headers(scope: Scope, *names: bytes) -> dict[bytes, bytes] | None:
    """These headers' values (names lower case, as ASGI gives them); None if one of them comes twice."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in names:
            if name in found:
                return None
            found[name] = value
    return found


def _bearer(value: bytes | None) -> str | None:
    """The token of `Bearer <token>`, if it may be a device's; None leaves the header to the app."""
    if value is None:
        return None
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"bearer" or not token or b" " in token or not token.isascii():
        return None
    secret = token.decode("ascii")
    return None if secret.startswith(API_TOKEN_PREFIX) else secret


def _admitted(hub: Hub, secret: str) -> devices.DeviceCaller | None:
    """The accepted device the token comes from, from this process's cache; None: the app decides."""
    try:
        return devices.admit_cached(hub, secret)
    except HubError:
        return None


def _properties(body: bytes) -> dict[str, Any] | None:
    """The report's properties, validated as the route validates them; None: the app says what is wrong."""
    try:
        return ReportedProperties.model_validate(json.loads(body)).properties.patch()
    except (ValueError, ValidationError, RecursionError):
        return None


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The request's messages as received, and its body (None if the client left before sending it all)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives the app the messages already read, then the connection's own."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _send_target(send: Send, answer: TargetState, tag: str, if_none_match: str | None) -> None:
    """As the route answers (`longpoll.respond`): 304 with only the ETag if unchanged, else the state and its ETag."""
    header = (b"etag", tag.encode())
    if tag == if_none_match:
        await send({"type": "http.response.start", "status": 304, "headers": [header]})
        await send({"type": "http.response.body", "body": b""})
        return
    await _send_json(send, 200, answer.model_dump_json(by_alias=True).encode(), header)


async def _send_json(send: Send, status: int, body: bytes, *extra: tuple[bytes, bytes]) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
