"""The Engine API over the engine's socket, with httpx: the calls the agent makes, JSON in and out, errors converted.

The agent keeps one HTTP stack: httpx talks to the hub and, through this module, to the
container engine (Docker, Moby, balenaEngine, or Podman's Docker-compatible service) on its
unix socket or a ``tcp://`` address. docker-py and the requests stack it brings stay out
of the agent's memory (about 6 MiB of an idle agent; docs/benchmarks.md); urllib3 still
comes with python-tuf, once an update loads it.

Paths are versioned (``/v1.41/...``) except `/version`, which even an older engine answers.
Every failure becomes `EngineError` here (the engine boundary): an answer of 4xx is not
retryable, 5xx and transport trouble are; 404 is `EngineNotFoundError`, which callers use to
tell "not there". Answers are bounded (`Bounds.engine_answer_bytes`, `Bounds.engine_message_bytes`),
so a confused engine cannot make the agent hold much. An image pull or load may go quiet for
`Bounds.engine_silence` seconds: engines are quiet while they unpack layers, for minutes on a slow
board (docker-py waited without end; the transaction's phase deadline still bounds the update).
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.errors import EngineError, EngineNotFoundError

_LOCAL = "http://engine"
"""The host part of URLs sent over the unix socket (engines ignore it)."""


def filters(labels: Iterable[str]) -> str:
    """The `filters` query parameter that selects objects carrying every label (``KEY=VALUE``)."""
    return json.dumps({"label": list(labels)})


def segment(value: str) -> str:
    """A path segment: an ID or a name (an image reference keeps its ``/`` and ``:``, as engines expect)."""
    return quote(value, safe="/:")


class EngineApi:
    """One engine endpoint: ``unix:///run/podman/podman.sock``, ``unix:///var/run/docker.sock`` or ``tcp://HOST:PORT``."""

    def __init__(
        self,
        base_url: str,
        *,
        version: str,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        bounds: Bounds = DEFAULT_BOUNDS,
    ) -> None:
        """Connect lazily (the first call opens the socket); `transport` replaces the socket (unit tests).

        Raises:
            EngineError: not retryable: an address of a kind the agent does not speak.
        """
        # Plain HTTP on the engine's socket: a TLS context that trusts nothing and loads nothing,
        # instead of httpx's default, which reads the whole CA bundle (a megabyte) for no use.
        no_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if base_url.startswith("unix://"):
            socket = base_url.removeprefix("unix://")
            transport = transport or httpx.HTTPTransport(uds=socket, verify=no_tls)
            root = _LOCAL
        elif base_url.startswith(("tcp://", "http://")):
            transport = transport or httpx.HTTPTransport(verify=no_tls)
            root = "http://" + base_url.split("://", 1)[1].rstrip("/")
        else:
            raise EngineError(f"engine address {base_url!r}: use unix:///PATH or tcp://HOST:PORT", retryable=False)
        self.timeout = timeout
        self.bounds = bounds
        self._version = version
        # trust_env off: a device's HTTP_PROXY is for the internet, never for its own engine's socket.
        self._http = httpx.Client(transport=transport, base_url=root, timeout=timeout, verify=no_tls, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        what: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        versioned: bool = True,
    ) -> Any:
        """One request; its JSON answer (None when the engine answers with no body).

        Raises:
            EngineError: the engine refused or failed (`EngineNotFoundError` for 404), or could not be reached.
        """
        data = self._send(what, method, path, params=params, body=body, timeout=timeout, versioned=versioned)
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise EngineError(f"{what}: the engine's answer is not JSON") from exc

    def send(self, what: str, method: str, path: str, **arguments: Any) -> None:
        """One request whose answer is not needed (start, stop, remove, connect): engines differ in what they say.

        Raises:
            EngineError: as `call`.
        """
        self._send(what, method, path, **arguments)

    def raw(self, what: str, method: str, path: str, **arguments: Any) -> bytes:
        """One request; its answer's bytes (logs, an exec's output), at most `Bounds.engine_answer_bytes`.

        Raises:
            EngineError: as `call`.
        """
        return self._send(what, method, path, **arguments)

    def progress(
        self, what: str, path: str, *, params: Mapping[str, str] | None = None, content: Iterable[bytes] | None = None
    ) -> None:
        """A POST whose answer is a stream of JSON progress messages (pull, load), read to its end.

        Raises:
            EngineError: the request failed, or a message reports an error (its text).
        """
        headers = {"Content-Type": "application/x-tar"} if content is not None else None
        with (
            _converted(what),
            self._http.stream(
                "POST",
                self._url(path),
                params=params,
                content=content,
                headers=headers,
                timeout=httpx.Timeout(self.timeout, read=self.bounds.engine_silence),
            ) as response,
        ):
            if response.status_code >= 400:
                _refuse(what, response.status_code, _bounded(response.iter_bytes(), what, self.bounds))
            for message in _messages(response.iter_text(), what, self.bounds.engine_message_bytes):
                detail = message.get("errorDetail") or message.get("error")
                if detail:
                    text = detail.get("message", detail) if isinstance(detail, dict) else detail
                    raise EngineError(f"{what}: {str(text)[:500]}")

    def _send(
        self,
        what: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        versioned: bool = True,
    ) -> bytes:
        url = self._url(path) if versioned else path
        with (
            _converted(what),
            self._http.stream(
                method, url, params=params, json=body, timeout=self.timeout if timeout is None else timeout
            ) as response,
        ):
            data = _bounded(response.iter_bytes(), what, self.bounds)
            if response.status_code >= 400:
                _refuse(what, response.status_code, data)
        return data

    def _url(self, path: str) -> str:
        return f"/v{self._version}{path}"


@contextlib.contextmanager
def _converted(what: str) -> Iterator[None]:
    """Transport errors (httpx's, the socket's) -> retryable `EngineError`, named by what the agent was doing."""
    try:
        yield
    except (httpx.HTTPError, OSError) as exc:
        raise EngineError(f"{what}: {exc or type(exc).__name__}") from exc


def _bounded(chunks: Iterator[bytes], what: str, bounds: Bounds) -> bytes:
    """The whole answer, refused past `Bounds.engine_answer_bytes`."""
    data = bytearray()
    limit = bounds.engine_answer_bytes
    for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise EngineError(f"{what}: the engine's answer is larger than {limit} bytes")
    return bytes(data)


def _refuse(what: str, status: int, data: bytes) -> None:
    """An error answer as `EngineError`: the engine's own message, retryable only for 5xx.

    Raises:
        EngineError: always (`EngineNotFoundError` for 404).
    """
    try:
        message = str(json.loads(data).get("message", ""))
    except (ValueError, AttributeError):
        message = data.decode("utf-8", "replace")
    text = f"{what}: {' '.join(message.split())[:500] or f'HTTP {status}'}"
    if status == 404:
        raise EngineNotFoundError(text, retryable=False)
    raise EngineError(text, retryable=status >= 500)


def _messages(texts: Iterator[str], what: str, limit: int) -> Iterator[dict[str, Any]]:
    """The JSON objects of a progress stream, however the engine separates them (newlines or nothing).

    One message is at most `limit` characters.
    """
    decoder = json.JSONDecoder()
    buffer = ""
    for text in texts:
        buffer += text
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                message, end = decoder.raw_decode(buffer)
            except ValueError as exc:
                if len(buffer) > limit:
                    raise EngineError(f"{what}: a progress message over {limit} bytes") from exc
                break  # the rest of this message comes with the next chunk
            buffer = buffer[end:]
            if isinstance(message, dict):
                yield message
    if buffer.strip():
        raise EngineError(f"{what}: the engine's progress stream ends inside a message")


def demultiplexed(data: bytes) -> bytes:
    """A container's output as the engine frames it without a terminal (8-byte headers), as one byte string.

    Each frame: stream (0 stdin, 1 stdout, 2 stderr, 3 the engine's own error), three zero bytes, the payload's length
    (4 bytes, big-endian), the payload. Output that is not framed (a container with a
    terminal) is returned as it is.
    """
    if len(data) < 8 or data[0] not in (0, 1, 2, 3) or data[1:4] != b"\0\0\0":
        return data
    out = bytearray()
    position = 0
    while position + 8 <= len(data):
        size = int.from_bytes(data[position + 4 : position + 8], "big")
        out += data[position + 8 : position + 8 + size]
        position += 8 + size
    return bytes(out)
