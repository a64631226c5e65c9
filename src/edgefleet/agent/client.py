"""The agent's HTTPS client for the hub: verifies the hub against the fleet CA, signs each request.

httpx does the transport; this module converts its exceptions and the hub's error bodies
into `agent.errors` at the boundary. Tests can hand in any `httpx.Client` (e.g. a TestClient).
The polling and reporting requests are also built and read as plain data (`Call`,
`target_call`/`target_answer`, ...) so that an `httpx.AsyncClient` sends exactly the same
ones: the fleet simulator (`edgefleet.sim`) does.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.errors import DeviceNotAcceptedError, HubRefusedError, HubUnreachableError
from edgefleet.agent.identity import LocalIdentity
from edgefleet.agent.progress import DownloadProgress
from edgefleet.protocol import API_PREFIX, DeviceIdentity, EnrollRequest, ErrorBody, RenewRequest, TargetState

if TYPE_CHECKING:
    from edgefleet.agent.fetcher import HttpxFetcher

_NOT_ACCEPTED = {"device_pending", "device_rejected", "device_revoked"}
_WIRE_HEADERS = {b"content-encoding", b"content-length", b"transfer-encoding"}
ETAG = re.compile(r'(W/)?"[\x21\x23-\x7e]{1,128}"')
"""An entity tag as HTTP spells it (RFC 9110), bounded: what the agent sends back in If-None-Match."""


AS_IS = {"Accept-Encoding": "identity"}
"""Asked with every request to the hub: a compressed answer's size says nothing of what it expands to."""


def encoded(response: httpx.Response) -> str | None:
    """How an answer's body is encoded when it is not as is (the agent refuses such answers), else None."""
    return encoding_of(response.headers.get("Content-Encoding"))


def encoding_of(header: str | None) -> str | None:
    """A `Content-Encoding` header's encoding when it is not as is, else None (`encoded`, for a raw header)."""
    encoding = (header or "identity").strip().lower()
    return None if encoding == "identity" else encoding[:32]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Call:
    """One request of the device protocol as data: built without I/O, sent by a sync or an async httpx client."""

    method: str
    path: str
    """Below `API_PREFIX`."""
    identity: LocalIdentity | None = None
    """When given, the request carries a fresh token signed by the device key, minted when it is sent."""
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hold: float = 0.0
    """Seconds the hub may hold the request (long-poll): the read timeout must outlast that."""

    def arguments(self, *, now: datetime, timeout: httpx.Timeout) -> dict[str, Any]:
        """Keyword arguments for `request()` of `httpx.Client` or `httpx.AsyncClient` (`timeout`: the client's)."""
        headers = AS_IS | self.headers
        if self.identity is not None:
            headers["Authorization"] = f"Bearer {self.identity.token(now=now)}"
        arguments: dict[str, Any] = {
            "method": self.method,
            "url": API_PREFIX + self.path,
            "headers": headers,
            "json": self.json,
            "params": self.params,
        }
        if self.hold:
            arguments["timeout"] = httpx.Timeout(timeout.connect or 30.0, read=(timeout.read or 30.0) + self.hold)
        return arguments


def checked(response: httpx.Response, limit: int = DEFAULT_BOUNDS.response_bytes) -> dict[str, Any]:
    """The JSON body of a 2xx answer of at most `limit` bytes; hub errors become agent errors."""
    if len(response.content) > limit:
        raise HubUnreachableError("hub answer too large")
    if response.status_code >= 500:
        raise HubUnreachableError(f"hub error {response.status_code}")
    if response.status_code >= 400:
        try:
            error = ErrorBody.model_validate_json(response.content)
        except ValueError:
            error = ErrorBody(code="http_error", message=response.text[:200])
        cls = DeviceNotAcceptedError if error.code in _NOT_ACCEPTED else HubRefusedError
        raise cls(response.status_code, error.code, error.message)
    try:
        data: dict[str, Any] = response.json()
    except ValueError as exc:
        raise HubUnreachableError("hub answered with invalid JSON") from exc
    return data


def target_call(identity: LocalIdentity, *, wait: float = 0, etag: str | None = None) -> Call:
    """Long-poll what the device must run; the hub holds it up to `wait` while `etag` is still current."""
    return Call(
        "GET",
        "/device/target",
        identity,
        params={"wait": wait} if wait else None,
        headers={"If-None-Match": etag} if etag else {},
        hold=wait,
    )


def target_answer(
    response: httpx.Response, etag: str | None, limit: int = DEFAULT_BOUNDS.response_bytes
) -> tuple[TargetState | None, str | None]:
    """(state, its ETag), or (None, etag) when unchanged (304). An ETag that is not one is taken as none."""
    if response.status_code == 304:
        return None, etag
    state = TargetState.model_validate(checked(response, limit))
    tag = response.headers.get("ETag")
    return state, tag if tag is not None and ETAG.fullmatch(tag) else None


def events_call(identity: LocalIdentity, events: list[dict[str, Any]], *, dropped: int) -> Call:
    return Call("POST", "/device/events", identity, json={"events": events, "dropped": dropped})


def acknowledged(response: httpx.Response, limit: int = DEFAULT_BOUNDS.response_bytes) -> int:
    """The highest event sequence number the hub says it has recorded."""
    through = checked(response, limit).get("acknowledged")
    if not isinstance(through, int) or isinstance(through, bool):
        raise HubUnreachableError("hub answered events without an acknowledgement")
    return through


def report_call(identity: LocalIdentity, properties: dict[str, Any], device_id: str | None = None) -> Call:
    path = f"/devices/{device_id or identity.device_id}/twin/reported"
    return Call("PATCH", path, identity, json={"properties": properties})


class DeviceClient:
    """Device-side calls to the hub's API over a given `httpx.Client` (see `connect`)."""

    def __init__(
        self, http: httpx.Client, *, clock: Callable[[], datetime] = _utc_now, bounds: Bounds = DEFAULT_BOUNDS
    ) -> None:
        self._http = http
        self._clock = clock
        self._bounds = bounds

    @classmethod
    def connect(
        cls, hub_url: str, *, ca: Path | str | None, timeout: float = 30.0, bounds: Bounds = DEFAULT_BOUNDS
    ) -> DeviceClient:
        """A client for `hub_url` that trusts only `ca` (the fleet CA) when given."""
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
        return cls(httpx.Client(base_url=hub_url.rstrip("/"), verify=verify, timeout=timeout), bounds=bounds)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, call: Call, *, limit: int | None = None) -> httpx.Response:
        """One request to the API, signed by the device when the call names its identity; transport errors converted.

        The answer is read no further than `limit` bytes (`Bounds.response_bytes` unless given),
        and must not be compressed (the agent asks for no encoding): a hub answering without end,
        or with a small compressed bomb, cannot fill the device's memory.

        Raises:
            HubUnreachableError: no answer, or a longer one.
        """
        limit = self._bounds.response_bytes if limit is None else limit
        try:
            request = self._http.build_request(**call.arguments(now=self._clock(), timeout=self._http.timeout))
            response = self._http.send(request, stream=True)
            try:
                if (encoding := encoded(response)) is not None:
                    raise HubUnreachableError(f"hub answer encoded as {encoding!r}: the agent asks for none")
                body = bytearray()
                for chunk in response.iter_bytes():  # not decoded: the encoding is identity
                    body += chunk
                    if len(body) > limit:
                        raise HubUnreachableError(f"hub answer larger than {limit} bytes")
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise HubUnreachableError(f"hub unreachable: {exc}") from exc
        # The answer again, its body read: the headers as they came (bytes: any a proxy added), but
        # those that described the body on the wire.
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _WIRE_HEADERS]
        return httpx.Response(response.status_code, headers=headers, content=bytes(body), request=request)

    def _call(
        self, method: str, path: str, *, identity: LocalIdentity | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return checked(self._send(Call(method, path, identity, json=body)), self._bounds.response_bytes)

    def enroll(self, request: EnrollRequest) -> DeviceIdentity:
        return DeviceIdentity.model_validate(self._call("POST", "/enroll", body=request.model_dump()))

    def whoami(self, identity: LocalIdentity) -> DeviceIdentity:
        return DeviceIdentity.model_validate(self._call("GET", "/device/self", identity=identity))

    def renew(self, identity: LocalIdentity, csr: str, *, key_change_proof: str | None = None) -> DeviceIdentity:
        body = RenewRequest(csr=csr, key_change_proof=key_change_proof).model_dump()
        return DeviceIdentity.model_validate(self._call("POST", "/device/certificate", identity=identity, body=body))

    @property
    def base_url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    def fetcher(
        self, identity: LocalIdentity, *, partial_dir: Path | None = None, progress: DownloadProgress | None = None
    ) -> HttpxFetcher:
        """A TUF fetcher over this connection, sending the device's token with every request.

        With `partial_dir`, interrupted target downloads resume on a later attempt; `progress`
        hears of each chunk of a target file (`agent.fetcher`).
        """
        from edgefleet.agent.fetcher import HttpxFetcher  # python-tuf: loaded when a target first changes

        return HttpxFetcher(
            self._http,
            lambda: identity.token(now=self._clock()),
            partial_dir=partial_dir,
            progress=progress,
            bounds=self._bounds,
        )

    def tuf_roots(self, identity: LocalIdentity) -> tuple[bytes, bytes]:
        """(image repository root v1, director root) as the hub serves them: trusted on first use only."""
        return self.repository_roots(identity, limit=1)[0], self.director_root(identity)

    def repository_roots(self, identity: LocalIdentity, *, limit: int) -> list[bytes]:
        """The image repository's root versions from 1 up, as the hub serves them (at most `limit`).

        Raises:
            HubUnreachableError: the hub has no image repository yet, or could not be asked.
        """
        roots: list[bytes] = []
        for version in range(1, limit + 1):
            call = Call("GET", f"/tuf/repository/{version}.root.json", identity)
            response = self._send(call, limit=self._bounds.root_bytes)
            if response.status_code == 404 and roots:
                break
            if response.status_code == 404:
                raise HubUnreachableError(
                    "the hub has no image repository yet: a publisher creates it with `edgefleet repo init`"
                )
            roots.append(self._metadata(response, f"root version {version}"))
        return roots

    def director_root(self, identity: LocalIdentity) -> bytes:
        """The director's current root (the hub's own key: taken from the hub)."""
        call = Call("GET", "/tuf/director/root.json", identity)
        return self._metadata(self._send(call, limit=self._bounds.root_bytes), "the director's root")

    def _metadata(self, response: httpx.Response, what: str) -> bytes:
        """A root metadata file (read no further than `Bounds.root_bytes` by `_send`)."""
        if response.status_code != 200:
            raise HubUnreachableError(f"cannot fetch {what}: HTTP {response.status_code}")
        return response.content

    def target_state(
        self, identity: LocalIdentity, *, wait: float = 0, etag: str | None = None
    ) -> tuple[TargetState | None, str | None]:
        """Long-poll what this device must run: (state, its ETag), or (None, etag) when unchanged (304)."""
        return target_answer(self._send(target_call(identity, wait=wait, etag=etag)), etag, self._bounds.response_bytes)

    def twin(self, identity: LocalIdentity, device_id: str | None = None) -> dict[str, Any]:
        return self._call("GET", f"/devices/{device_id or identity.device_id}/twin", identity=identity)

    def report(
        self, identity: LocalIdentity, properties: dict[str, Any], device_id: str | None = None
    ) -> dict[str, Any]:
        return checked(self._send(report_call(identity, properties, device_id)), self._bounds.response_bytes)

    def events(self, identity: LocalIdentity, events: list[dict[str, Any]], *, dropped: int) -> int:
        """Deliver update events (oldest first); returns the highest sequence number the hub has recorded."""
        return acknowledged(self._send(events_call(identity, events, dropped=dropped)), self._bounds.response_bytes)
