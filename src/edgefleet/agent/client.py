"""The agent's HTTPS client for the hub: verifies the hub against the fleet CA, signs each request.

httpx does the transport; this module converts its exceptions and the hub's error bodies
into `agent.errors` at the boundary. Tests can hand in any `httpx.Client` (e.g. a TestClient).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from edgefleet.agent.errors import DeviceNotAcceptedError, HubRefusedError, HubUnreachableError
from edgefleet.agent.fetcher import HttpxFetcher
from edgefleet.agent.identity import LocalIdentity
from edgefleet.protocol import API_PREFIX, DeviceIdentity, EnrollRequest, ErrorBody, RenewRequest, TargetState

MAX_RESPONSE_BYTES = 1024 * 1024
_NOT_ACCEPTED = {"device_pending", "device_rejected", "device_revoked"}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DeviceClient:
    """Device-side calls to the hub's API over a given `httpx.Client` (see `connect`)."""

    def __init__(self, http: httpx.Client, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._http = http
        self._clock = clock

    @classmethod
    def connect(cls, hub_url: str, *, ca: Path | str | None, timeout: float = 30.0) -> DeviceClient:
        """A client for `hub_url` that trusts only `ca` (the fleet CA) when given."""
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
        return cls(httpx.Client(base_url=hub_url.rstrip("/"), verify=verify, timeout=timeout))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, *, identity: LocalIdentity | None = None, **kwargs: Any) -> httpx.Response:
        """One request to the API, signed by the device when `identity` is given; transport errors converted."""
        headers = dict(kwargs.pop("headers", {}))
        if identity is not None:
            headers["Authorization"] = f"Bearer {identity.token(now=self._clock())}"
        try:
            return self._http.request(method, API_PREFIX + path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise HubUnreachableError(f"hub unreachable: {exc}") from exc

    def _call(
        self, method: str, path: str, *, identity: LocalIdentity | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self._checked(self._send(method, path, identity=identity, json=body))

    @staticmethod
    def _checked(response: httpx.Response) -> dict[str, Any]:
        """The JSON body of a 2xx answer; hub errors become agent errors."""
        if len(response.content) > MAX_RESPONSE_BYTES:
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

    def fetcher(self, identity: LocalIdentity, *, partial_dir: Path | None = None) -> HttpxFetcher:
        """A TUF fetcher over this connection, sending the device's token with every request.

        With `partial_dir`, interrupted target downloads resume on a later attempt (`agent.fetcher`).
        """
        return HttpxFetcher(self._http, lambda: identity.token(now=self._clock()), partial_dir=partial_dir)

    def tuf_roots(self, identity: LocalIdentity) -> tuple[bytes, bytes]:
        """(image repository root v1, director root) as the hub serves them: trusted on first use only."""
        roots = []
        for path in ("/tuf/repository/1.root.json", "/tuf/director/root.json"):
            response = self._send("GET", path, identity=identity)
            if response.status_code != 200 or len(response.content) > MAX_RESPONSE_BYTES:
                raise HubUnreachableError(f"cannot fetch {path}: HTTP {response.status_code}")
            roots.append(response.content)
        return roots[0], roots[1]

    def target_state(
        self, identity: LocalIdentity, *, wait: float = 0, etag: str | None = None
    ) -> tuple[TargetState | None, str | None]:
        """Long-poll what this device must run: (state, its ETag), or (None, etag) when unchanged (304)."""
        # The hub holds the request up to `wait`; the read timeout must outlast that.
        read = (self._http.timeout.read or 30.0) + wait
        response = self._send(
            "GET",
            "/device/target",
            identity=identity,
            params={"wait": wait} if wait else None,
            headers={"If-None-Match": etag} if etag else {},
            timeout=httpx.Timeout(self._http.timeout.connect or 30.0, read=read),
        )
        if response.status_code == 304:
            return None, etag
        data = self._checked(response)
        return TargetState.model_validate(data), response.headers.get("ETag")

    def twin(self, identity: LocalIdentity, device_id: str | None = None) -> dict[str, Any]:
        return self._call("GET", f"/devices/{device_id or identity.device_id}/twin", identity=identity)

    def report(
        self, identity: LocalIdentity, properties: dict[str, Any], device_id: str | None = None
    ) -> dict[str, Any]:
        return self._call(
            "PATCH",
            f"/devices/{device_id or identity.device_id}/twin/reported",
            identity=identity,
            body={"properties": properties},
        )

    def events(self, identity: LocalIdentity, events: list[dict[str, Any]], *, dropped: int) -> int:
        """Deliver update events (oldest first); returns the highest sequence number the hub has recorded."""
        data = self._call("POST", "/device/events", identity=identity, body={"events": events, "dropped": dropped})
        acknowledged = data.get("acknowledged")
        if not isinstance(acknowledged, int) or isinstance(acknowledged, bool):
            raise HubUnreachableError("hub answered events without an acknowledgement")
        return acknowledged
