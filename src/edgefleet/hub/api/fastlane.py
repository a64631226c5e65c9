"""A device's plain requests, answered before FastAPI's routing: target polls, reports, events, TUF files.

Most of what a fleet sends is a device asking for its target (answered 304 or held until it
changes) and a device reporting a state the hub already holds; an update adds a dozen more
(its TUF files, its events, its changed report). FastAPI's routing, dependency resolution
and validation would be most of their cost (issue 16). `DeviceFastLane` answers exactly
those requests itself, with the same checks the routes make, through the same functions
(`devices.admit_cached` and `admit_loaded`, `devices.unchanged_by_report` and
`update_reported`, `longpoll.settle`, `device_state`, `events.record_events`), and the same
bytes, headers and statuses the routes answer: from this process's caches when they hold
the device and its answer, else read or written as the route would (in the thread pool).

Anything else goes to the app untouched, including every request it is unsure of: another
path or method, a query besides `wait`, headers it does not expect, a body that is not plain
JSON of the right shape, an operator token, a report to another device's path. The routes
then decide as they always have, so this lane can only ever answer what the app would
answer. It sits inside the body limit and the request metrics, which count its answers under
the routes' templates. `api.tuflane` decides the answers to TUF requests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefleet.hub import offload
from edgefleet.hub.api import longpoll, tuflane
from edgefleet.hub.api.answers import hub_error_response
from edgefleet.hub.api.routes import device as routes
from edgefleet.hub.api.schemas import TwinOut
from edgefleet.hub.context import Hub
from edgefleet.hub.errors import HubError
from edgefleet.hub.services import device_state, devices, events
from edgefleet.hub.services.operators import API_TOKEN_PREFIX
from edgefleet.protocol import API_PREFIX, DeviceEvents, ReportedProperties, TargetState

TARGET_PATH = API_PREFIX + routes.TARGET
REPORTED_TEMPLATE = API_PREFIX + routes.REPORTED
EVENTS_PATH = API_PREFIX + routes.EVENTS
_REPORTED = re.compile("^" + re.escape(REPORTED_TEMPLATE).replace(re.escape("{device_id}"), "([0-9a-f-]{36})") + "$")
_WAIT = re.compile(rb"^wait=([0-9]{1,4}(?:\.[0-9]{1,6})?)$")
"""The one query the lane takes: `wait` as a plain decimal; the route parses every other spelling."""
_JSON = b"application/json"


class DeviceFastLane:
    """ASGI middleware: answers a device's plain requests as the routes do (see the module), or hands them on."""

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
            elif method == "POST" and path == EVENTS_PATH:
                unanswered = await self._events(scope, receive, send)
                if unanswered is None:
                    return
                receive = unanswered
        await self.app(scope, receive, send)

    async def _target(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a target poll as the route does (the caches first, else the database); False: the app answers it."""
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
        scope["route"] = _TARGET_ROUTE
        try:
            caller = await _caller(hub, secret)
            device_id = caller.device.id
            answer, tag = await longpoll.settle(
                lambda: device_state.target_state(hub, device_id),
                notifier=hub.notifier,
                device_id=device_id,
                first=device_state.cached_target_state(hub, device_id),
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
        """Answer a device's TUF request as the routes do, from what this process holds if it can; False: the app."""
        headers = _headers(scope, b"authorization", b"range")
        if scope["query_string"] or headers is None:
            return False
        secret = _bearer(headers.get(b"authorization"))
        template = tuflane.template(scope["path"])
        if secret is None or template is None:
            return False
        hub = self.hub
        try:
            caller = await _caller(hub, secret)
            found = tuflane.answer(hub, caller, scope["path"], ranged=b"range" in headers)
            if found is None:
                return False
            response = found.response
            if response is None and found.read is not None:
                response = await offload.call(found.read)
        except HubError as exc:
            response = hub_error_response(exc)
        if response is None:  # pragma: no cover - an answer has a response or a way to read it
            return False
        scope["route"] = AnsweredRoute(template)
        await response(scope, receive, send)
        return True

    async def _json_body(self, scope: Scope, receive: Receive) -> tuple[bytes | None, str | None, Receive]:
        """A device's JSON request body and token, and the `receive` the app reads the same body from.

        The body is None when the request is not one the lane takes: a query, duplicate or
        missing headers, another content type, a declared length over the limit.
        """
        headers = _headers(scope, b"authorization", b"content-type", b"content-length")
        if scope["query_string"] or headers is None or headers.get(b"content-type") != _JSON:
            return None, None, receive
        declared = headers.get(b"content-length")
        if declared is None or not declared.isdigit() or int(declared) > self.hub.settings.max_body_bytes:
            return None, None, receive
        messages, body = await _read_body(receive)
        return body, _bearer(headers.get(b"authorization")), _replaying(messages, receive)

    async def _report(self, scope: Scope, receive: Receive, send: Send, device_id: str) -> Receive | None:
        """Answer a device's own state report as the route does; else the `receive` the app reads the same body from."""
        body, secret, replay = await self._json_body(scope, receive)
        properties = None if body is None or secret is None else _properties(body)
        if properties is None or secret is None:
            return replay
        hub, token = self.hub, secret

        async def twin() -> bytes | None:
            caller = await _caller(hub, token)
            if caller.device.id != device_id:
                return None  # the route says why not
            same = devices.unchanged_by_report(caller, device_id, properties)
            twin = same or await offload.call(devices.update_reported, hub, caller, device_id, properties)
            return TwinOut.model_validate(twin).model_dump_json(by_alias=True).encode()

        return None if await _answered(scope, receive, send, _REPORTED_ROUTE, twin) else replay

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Record a device's events as the route does; else the `receive` the app reads the same body from."""
        body, secret, replay = await self._json_body(scope, receive)
        batch = None if body is None or secret is None else _events(body)
        if batch is None or secret is None:
            return replay
        hub, token = self.hub, secret

        async def acknowledged() -> bytes:
            caller = await _caller(hub, token)
            ack = await offload.call(events.record_events, hub, caller, batch)
            return ack.model_dump_json(by_alias=True).encode()

        return None if await _answered(scope, receive, send, _EVENTS_ROUTE, acknowledged) else replay


async def _answered(
    scope: Scope, receive: Receive, send: Send, route: AnsweredRoute, answer: Callable[[], Awaitable[bytes | None]]
) -> bool:
    """Send `answer`'s JSON (200) or the hub error it raised, counted under `route`; False when it gave none."""
    try:
        body = await answer()
    except HubError as exc:
        await _answer_error(scope, receive, send, route, exc)
        return True
    if body is None:
        return False
    scope["route"] = route
    await _send_json(send, 200, body)
    return True


async def _answer_error(scope: Scope, receive: Receive, send: Send, route: AnsweredRoute, exc: HubError) -> None:
    scope["route"] = route
    await hub_error_response(exc)(scope, receive, send)


@dataclass(frozen=True, slots=True)
class AnsweredRoute:
    """What `scope["route"]` holds for the request metrics when the lane answered: the route's template."""

    path: str


_TARGET_ROUTE = AnsweredRoute(TARGET_PATH)
_REPORTED_ROUTE = AnsweredRoute(REPORTED_TEMPLATE)
_EVENTS_ROUTE = AnsweredRoute(EVENTS_PATH)


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


async def _caller(hub: Hub, secret: str) -> devices.DeviceCaller:
    """The accepted device the token comes from: from this process's cache, else read (as `deps.current_device`).

    Raises:
        HubError: the token or the device is refused.
    """
    cached = devices.admit_cached(hub, secret)
    if cached is not None:
        return cached
    return await offload.call(devices.admit_loaded, hub, secret)


def _events(body: bytes) -> DeviceEvents | None:
    """The batch of events, validated as the route validates it; None: the app says what is wrong."""
    try:
        return DeviceEvents.model_validate(json.loads(body))
    except (ValueError, ValidationError, RecursionError):
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
