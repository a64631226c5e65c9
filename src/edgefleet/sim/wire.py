"""The simulator's requests to the hub over keep-alive HTTP/1.1 connections of its own, without httpx's pool.

A simulator of 10,000 devices holds a poll per device, each answered after up to a minute, and
at that scale httpx's client was most of the simulator's CPU per request (in a profile of the
20k-device benchmark: httpcore 23 %, httpx 12 %, h11 9 %, anyio 9 %, urllib 6 %: its request and
URL models, httpcore's pool and its checks of every pooled connection, anyio's streams). And a
request with a body left in two writes, the body once the simulator's busy event loop came
back to it, which the hub counted as its own latency. `WireClient` sends the request a
device's agent sends (the agent's `Call`, signed when sent) in one write on one of its
shard's connections, one request at a time per connection, and hands the answer to the
agent's own readers as an `httpx.Response`. It reads only what the hub's answers to devices
are: a status line, headers, and a body of declared length (`Content-Length`) or in chunks, at
most `MAX_ANSWER_BYTES`, with no body for 204 and 304; anything else is a protocol error, and
the connection is closed. Failures are httpx's exceptions, so `Link` treats both alike. An
update's TUF and artifact requests still go through httpx in the worker processes.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import re
import ssl
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import quote, urlencode, urlsplit

import httpx

from edgefleet.agent.bounds import DEFAULT_BOUNDS
from edgefleet.agent.client import encoding_of

MAX_HEAD_BYTES = 64 * 1024
"""The status line and headers of an answer, at most."""
MAX_ANSWER_BYTES = DEFAULT_BOUNDS.response_bytes
"""An answer's body, at most (the agent refuses a larger one anyway)."""
MAX_BUFFER_BYTES = MAX_HEAD_BYTES + 2 * MAX_ANSWER_BYTES
"""What one answer may take on the wire, chunk framing and trailers included, at most."""
USER_AGENT = "edgefleet-sim"
_WIRE_HEADERS = {"content-encoding", "content-length", "transfer-encoding"}
"""Dropped from the answer handed on: the body is as it came, whole (as the agent's client does)."""
_LENGTH = re.compile(r"[0-9]{1,12}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")


class _Answer:
    """A complete answer: status, headers (names in lower case), body, and whether the connection stays open."""

    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class _Connection(asyncio.Protocol):
    """One connection to the hub carrying one exchange at a time; its answer is parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[_Answer] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP or TLS connection's transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # nothing was asked: an answer out of turn
            return
        try:
            if len(self._buffer) > MAX_BUFFER_BYTES:
                raise httpx.RemoteProtocolError(f"an answer of more than {MAX_BUFFER_BYTES} bytes on the wire")
            answer = _parse(self._buffer)
        except httpx.RemoteProtocolError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if answer is not None:
            self._waiter = None
            waiter.set_result(answer)

    def eof_received(self) -> bool:
        self.closed = True  # not reused from now on, though TLS may take a while to finish closing
        return False  # the transport closes; `connection_lost` fails an exchange in progress

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            why = "" if exc is None else f": {type(exc).__name__}: {exc}"
            waiter.set_exception(httpx.RemoteProtocolError(f"the hub closed the connection before it answered{why}"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes) -> _Answer:
        """Send `request`, wait for its whole answer."""
        if self.transport is None or self._waiter is not None:
            raise httpx.RemoteProtocolError("a connection not ready for a request")  # pragma: no cover - a bug
        self._buffer.clear()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._waiter


def _parse(buffer: bytearray) -> _Answer | None:
    """The answer at the start of `buffer` once it is complete, else None.

    Raises:
        httpx.RemoteProtocolError: not an HTTP/1.1 answer this client reads, or too large.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise httpx.RemoteProtocolError("the answer's head is too large")
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit() or rest[3:4] not in ("", " "):
        raise httpx.RemoteProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    status = int(code)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"not a header line: {line[:80]!r}")
        headers.append((name.lower(), value.strip()))
    found = dict(headers)
    if (encoding := encoding_of(found.get("content-encoding"))) is not None:  # the agent's rule: none asked for
        raise httpx.RemoteProtocolError(f"an answer encoded as {encoding!r}: none was asked for")
    keep_alive = version == "HTTP/1.1" and found.get("connection", "").lower() != "close"
    start = end + 4
    if status < 200:
        raise httpx.RemoteProtocolError(f"an informational answer ({status}) to a poll")
    if status in (204, 304):
        body = b""
        if len(buffer) > start:
            raise httpx.RemoteProtocolError("bytes after an answer without a body")
    elif found.get("transfer-encoding", "").lower() == "chunked":
        chunked = _chunked(buffer, start)
        if chunked is None:
            return None
        body = chunked
    elif "transfer-encoding" in found:
        raise httpx.RemoteProtocolError(f"unsupported transfer encoding {found['transfer-encoding'][:40]!r}")
    else:
        length = found.get("content-length")
        if length is None or not _LENGTH.fullmatch(length):
            raise httpx.RemoteProtocolError("an answer without a valid Content-Length")
        size = int(length)
        if size > MAX_ANSWER_BYTES:
            raise httpx.RemoteProtocolError(f"an answer of {size} bytes (at most {MAX_ANSWER_BYTES})")
        if len(buffer) < start + size:
            return None
        if len(buffer) > start + size:
            raise httpx.RemoteProtocolError("bytes after the answer")
        body = bytes(buffer[start:])
    return _Answer(status, [(name, value) for name, value in headers if name not in _WIRE_HEADERS], body, keep_alive)


def _chunked(buffer: bytearray, at: int) -> bytes | None:
    """A chunked body from `at` once its last chunk and trailer arrived, else None (each time from the start)."""
    body = bytearray()
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            if len(buffer) - at > 1024:
                raise httpx.RemoteProtocolError("a chunk size line is too long")
            return None
        size_text = bytes(buffer[at:line_end]).split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise httpx.RemoteProtocolError(f"not a chunk size: {size_text[:20]!r}")
        size = int(size_text, 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", at - 2)
            if trailer_end < 0:
                return None
            if len(buffer) > trailer_end + 4:
                raise httpx.RemoteProtocolError("bytes after the answer")
            return bytes(body)
        if len(body) + size > MAX_ANSWER_BYTES:
            raise httpx.RemoteProtocolError(f"an answer of more than {MAX_ANSWER_BYTES} bytes")
        if len(buffer) < at + size + 2:
            return None
        if buffer[at + size : at + size + 2] != b"\r\n":
            raise httpx.RemoteProtocolError("a chunk that does not end as declared")
        body += buffer[at : at + size]
        at += size + 2


def _query(params: Mapping[str, Any]) -> str:
    """Query parameters as httpx writes them (true/false, an empty value for None, %20 for a space)."""

    def text(value: Any) -> str:
        if value is True or value is False:
            return "true" if value else "false"
        return "" if value is None else str(value)

    return urlencode([(name, text(value)) for name, value in params.items()], quote_via=quote)


class WireClient:
    """Connections to the hub (a shard's polls, or its other calls): at most `limit`, one request at a time each.

    A request waits for an idle connection or room to open one (at most the timeout's `pool`);
    a connection is reused while the hub keeps it open, and closed after a failed, timed-out or
    cancelled exchange. `verify` is the TLS context of an https hub (None: the system's CAs;
    the simulator passes one that trusts the fleet CA).
    """

    def __init__(self, *, base_url: str, verify: ssl.SSLContext | None, limit: int, timeout: httpx.Timeout) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        if parts.username is not None or parts.query or parts.fragment or not base_url.isascii():
            raise ValueError(f"a hub URL with user, query, fragment or non-ASCII text: {base_url!r}")
        self.timeout = timeout
        """As `httpx.AsyncClient.timeout`: what `Call.arguments` extends by a poll's hold."""
        default = 443 if parts.scheme == "https" else 80
        self._host = parts.hostname
        self._port = parts.port or default
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if self._port == default else f"{host}:{self._port}"  # as httpx
        self._prefix = parts.path.rstrip("/")
        self._ssl = (verify or ssl.create_default_context()) if parts.scheme == "https" else None
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closing = False

    async def request(
        self,
        *,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """One exchange, as `httpx.AsyncClient.request` with the arguments `Call.arguments` gives.

        A `json` body is sent as httpx sends it (compact, UTF-8).

        Raises:
            ValueError: a header that would split the request.
            TypeError, ValueError: a body that JSON cannot say (as httpx).
            httpx.TransportError: no connection, a timeout, or an answer this client does not read.
        """
        body = b"" if json is None else jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        request = self._request(method, url, headers, params, body.encode() if isinstance(body, str) else body)
        limits = timeout or self.timeout
        try:
            async with asyncio.timeout(limits.pool):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection to the hub free in time") from None
        try:
            connection = await self._connection(limits)
            try:
                async with asyncio.timeout(limits.read):
                    answer = await connection.exchange(request)
            except TimeoutError:
                self._drop(connection)
                raise httpx.ReadTimeout("the hub did not answer in time") from None
            except BaseException:  # failed or cancelled mid-exchange: the connection's state is unknown
                self._drop(connection)
                raise
            if answer.keep_alive and not connection.closed and not self._closing:
                self._idle.append(connection)
            else:
                self._drop(connection)
        finally:
            self._slots.release()
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body)

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    def _request(
        self, method: str, url: str, headers: Mapping[str, str], params: Mapping[str, Any] | None, body: bytes
    ) -> bytes:
        target = self._prefix + url + (f"?{_query(params)}" if params else "")
        if not target.isascii():
            raise ValueError(f"a path that is not ASCII: {target[:80]!r}")
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self._host_header}",
            "Accept: */*",
            f"User-Agent: {USER_AGENT}",
        ]
        for part in (target, *headers.keys(), *headers.values()):
            if "\r" in part or "\n" in part or "\0" in part:
                raise ValueError("a header or path that would split the request")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def _connection(self, limits: httpx.Timeout) -> _Connection:
        """An idle open connection, else a new one (the caller holds a slot)."""
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            self._drop(connection)
        if self._closing:
            raise httpx.ConnectError("the client is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limits.connect):
                _, connection = await loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {self._host}:{self._port} in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"no connection to {self._host}:{self._port}: {exc}") from exc
        self._open.add(connection)
        return connection

    async def aclose(self) -> None:
        """Close every connection; requests in progress fail."""
        self._closing = True
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
