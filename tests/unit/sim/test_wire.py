"""The simulator's own HTTP client against a scripted loopback server: framing, reuse, bounds and bad answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.sim.wire import MAX_ANSWER_BYTES, MAX_HEAD_BYTES, WireClient, _parse

TIMEOUT = httpx.Timeout(5.0)
ANSWER = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: "v1"\r\ncontent-length: 11\r\n\r\n{"apps":{}}'
Script = Callable[[bytes, int], list[bytes] | None]
"""The server's answer to a request (the request's bytes, which connection): the writes; None: close."""
CLOSE = b""
"""A write that closes the connection instead."""


@dataclass
class Server:
    """A loopback HTTP server that answers each request by a script and keeps what it saw."""

    script: Script
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    delay: float = 0.0
    server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/base"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":")[1])
                            for line in head.split(b"\r\n")
                            if line.startswith(b"Content-Length:")
                        ),
                        0,
                    )
                    body = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests.append(head + body)
                await asyncio.sleep(self.delay)
                writes = self.script(head, number)
                if writes is None:
                    return
                for chunk in writes:
                    if chunk == CLOSE:
                        return
                    writer.write(chunk)
                    await writer.drain()
        finally:
            self.open_now -= 1
            writer.close()


def run(script: Script, test: Callable[[WireClient, Server], Awaitable[None]], *, limit: int = 4) -> Server:
    async def main() -> Server:
        server = Server(script)
        client = WireClient(base_url=await server.start(), verify=None, limit=limit, timeout=TIMEOUT)
        try:
            await test(client, server)
        finally:
            await client.aclose()
            assert server.server is not None
            server.server.close()
        return server

    return asyncio.run(main())


async def poll(client: WireClient, **headers: str) -> httpx.Response:
    return await client.request(
        method="GET", url="/device/target", headers={"If-None-Match": '"v0"', **headers}, params={"wait": 60.0}
    )


def test_a_poll_is_the_agents_request_and_its_answer_an_httpx_response_on_one_kept_connection() -> None:
    async def test(client: WireClient, server: Server) -> None:
        for _ in range(3):
            answer = await poll(client, Authorization="Bearer t")
            assert answer.status_code == 200
            assert answer.headers["ETag"] == '"v1"'
            assert answer.json() == {"apps": {}}

    server = run(lambda _request, _n: [ANSWER], test)
    assert server.connections == 1  # kept alive and reused
    first = server.requests[0].decode()
    assert first.startswith("GET /base/device/target?wait=60.0 HTTP/1.1\r\n")
    assert "\r\nHost: 127.0.0.1:" in first
    assert '\r\nIf-None-Match: "v0"\r\n' in first
    assert "\r\nAuthorization: Bearer t\r\n" in first


def test_a_json_body_follows_its_head_as_httpx_would_send_it() -> None:
    async def test(client: WireClient, server: Server) -> None:
        answer = await client.request(
            method="PATCH",
            url="/devices/d/twin/reported",
            headers={"Authorization": "Bearer t"},
            json={"properties": {"os": "Débian"}},
        )
        assert answer.status_code == 200

    server = run(lambda _request, _n: [ANSWER], test)
    request = server.requests[0]
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"PATCH /base/devices/d/twin/reported HTTP/1.1\r\n")
    assert b"\r\nContent-Type: application/json\r\n" in head + b"\r\n"
    assert body == httpx.Request("PATCH", "http://h", json={"properties": {"os": "Débian"}}).read()


def test_unchanged_chunked_and_closing_answers_are_read() -> None:
    chunked = b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{"a"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n'
    answers = [
        [b'HTTP/1.1 304 Not Modified\r\netag: "v0"\r\n\r\n'],
        [bytes([byte]) for byte in chunked],  # a byte at a time
        [b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"],
        [ANSWER],
    ]

    async def test(client: WireClient, server: Server) -> None:
        assert (await poll(client)).status_code == 304
        assert (await poll(client)).json() == {"a": 1}
        assert (await poll(client)).json() == {}
        assert (await poll(client)).status_code == 200

    seen: list[bytes] = []

    def script(request: bytes, _n: int) -> list[bytes]:
        seen.append(request)
        return answers[len(seen) - 1]

    served = run(script, test)
    assert served.connections == 2  # the hub closed after the third answer


def test_at_most_limit_connections_and_every_poll_answered() -> None:
    async def test(client: WireClient, server: Server) -> None:
        server.delay = 0.05
        answers = await asyncio.gather(*(poll(client) for _ in range(7)))
        assert [a.status_code for a in answers] == [200] * 7

    server = run(lambda _request, _n: [ANSWER], test, limit=2)
    assert server.most_open <= 2
    assert len(server.requests) == 7


BAD_ANSWERS = {
    "not http": [b"SSH-2.0-OpenSSH\r\n\r\n"],
    "bad status": [b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n"],
    "no length": [b"HTTP/1.1 200 OK\r\n\r\n{}"],
    "bad length": [b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"],
    "too long": [b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (MAX_ANSWER_BYTES + 1)],
    "informational": [b"HTTP/1.1 100 Continue\r\n\r\n"],
    "bad header": [b"HTTP/1.1 200 OK\r\nno colon here\r\ncontent-length: 0\r\n\r\n"],
    "gzip framing": [b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"],
    "bad chunk": [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
    "chunk overrun": [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"],
    "huge head": [b"HTTP/1.1 200 OK\r\n" + b"x: " + b"y" * MAX_HEAD_BYTES],
    "negative chunk": [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-9;xx\r\n"],
    "prefixed chunk": [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x10\r\n"],
    "underscored chunk": [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1_0\r\n"],
    "non-ascii length": [b"HTTP/1.1 200 OK\r\ncontent-length: \xb2\r\n\r\n"],
    "compressed": [b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 2\r\n\r\n{}"],
    "closed mid-answer": [b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{", CLOSE],
}


@pytest.mark.parametrize("name", sorted(BAD_ANSWERS))
def test_a_bad_answer_is_a_protocol_error_and_the_next_poll_opens_a_fresh_connection(name: str) -> None:
    def script(_request: bytes, number: int) -> list[bytes]:
        return BAD_ANSWERS[name] if number == 1 else [ANSWER]

    async def test(client: WireClient, server: Server) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await poll(client)
        assert (await poll(client)).status_code == 200

    server = run(script, test)
    assert server.connections == 2


def test_a_connection_the_hub_closed_while_idle_is_not_reused() -> None:
    async def test(client: WireClient, server: Server) -> None:
        assert (await poll(client)).status_code == 200
        await asyncio.sleep(0.2)  # the hub's keep-alive timeout closed it meanwhile
        assert (await poll(client)).status_code == 200

    server = run(lambda _request, _n: [ANSWER, CLOSE], test)
    assert server.connections == 2


def test_closing_the_client_fails_a_poll_in_flight_and_a_full_client_times_out_a_wait() -> None:
    async def test(client: WireClient, server: Server) -> None:
        server.delay = 0.5
        task = asyncio.create_task(poll(client))
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.PoolTimeout):  # the one connection is busy
            await client.request(method="GET", url="/x", headers={}, timeout=httpx.Timeout(5.0, pool=0.05))
        await client.aclose()
        with pytest.raises(httpx.RemoteProtocolError):
            await task
        with pytest.raises(httpx.ConnectError, match="closed"):
            await poll(client)

    run(lambda _request, _n: [ANSWER], test, limit=1)


def test_the_host_query_and_answer_headers_are_as_httpx_has_them() -> None:
    for base, host in [
        ("https://hub.test", "hub.test"),
        ("http://hub.test:80", "hub.test"),
        ("http://[::1]:8080", "[::1]:8080"),
    ]:
        client = WireClient(base_url=base, verify=None, limit=1, timeout=TIMEOUT)
        request = client._request("GET", "/x", {}, {"a": True, "b": None, "c": "x y", "wait": 60.0}, b"")
        assert request.startswith(b"GET /x?a=true&b=&c=x%20y&wait=60.0 HTTP/1.1\r\nHost: " + host.encode() + b"\r\n")
    found = _parse(bytearray(ANSWER))
    assert found is not None
    assert {name for name, _ in found.headers} == {"content-type", "etag"}  # framing is not handed on
    for bad in ("http://user@hub", "http://hub/?q=1", "http://hub/#f", "http://hüb"):
        with pytest.raises(ValueError, match="URL"):
            WireClient(base_url=bad, verify=None, limit=1, timeout=TIMEOUT)


def test_no_answer_in_time_is_a_read_timeout_and_a_refused_connection_a_connect_error() -> None:
    async def test(client: WireClient, server: Server) -> None:
        server.delay = 1.0
        with pytest.raises(httpx.ReadTimeout):
            await client.request(method="GET", url="/device/target", headers={}, timeout=httpx.Timeout(5.0, read=0.1))

    run(lambda _request, _n: [ANSWER], test)

    async def refused() -> None:
        server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        client = WireClient(base_url=f"http://127.0.0.1:{port}", verify=None, limit=1, timeout=TIMEOUT)
        with pytest.raises(httpx.ConnectError):
            await poll(client)

    asyncio.run(refused())


def test_a_cancelled_poll_closes_its_connection_and_frees_its_place() -> None:
    async def test(client: WireClient, server: Server) -> None:
        server.delay = 0.3
        task = asyncio.create_task(poll(client))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        server.delay = 0.0
        assert (await poll(client)).status_code == 200  # the one place is free again

    server = run(lambda _request, _n: [ANSWER], test, limit=1)
    assert server.connections == 2


@pytest.mark.parametrize(
    "headers", [{"X": "a\r\nInjected: 1"}, {"X\nY": "a"}, {"X": "nul\0"}], ids=["value", "name", "nul"]
)
def test_a_header_that_would_split_the_request_is_refused_before_anything_is_sent(headers: dict[str, str]) -> None:
    async def test(client: WireClient, server: Server) -> None:
        with pytest.raises(ValueError, match="split"):
            await client.request(method="GET", url="/device/target", headers=headers)
        with pytest.raises(ValueError, match="JSON"):
            await client.request(method="POST", url="/device/events", headers={}, json={"x": float("nan")})

    server = run(lambda _request, _n: [ANSWER], test)
    assert server.requests == []


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        WireClient(base_url="ftp://hub", verify=None, limit=1, timeout=TIMEOUT)


@pytest.mark.parametrize(
    "answer",
    [
        ANSWER + b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 304 Not Modified\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nx",
    ],
    ids=["after a body", "after no body", "after the last chunk"],
)
def test_bytes_after_an_answer_are_a_protocol_error(answer: bytes) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="after"):
        _parse(bytearray(answer))


def test_an_http_1_0_answer_or_connection_close_ends_the_connection() -> None:
    for head in (b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 200 OK\r\nConnection: Close\r\n"):
        found = _parse(bytearray(head + b"content-length: 0\r\n\r\n"))
        assert found is not None
        assert found.keep_alive is False


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(ANSWER) - 1), max_size=6, unique=True))
def test_an_answer_parses_the_same_however_it_arrives(cuts: list[int]) -> None:
    buffer = bytearray()
    found = None
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(ANSWER)], strict=True):
        assert found is None  # complete only once every byte is in
        buffer += ANSWER[start:end]
        found = _parse(buffer)
    assert found is not None
    assert (found.status, found.body, found.keep_alive) == (200, b'{"apps":{}}', True)
    assert ("etag", '"v1"') in found.headers


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda tail: b"HTTP/1.1 200 OK\r\n" + tail),
        st.binary(max_size=100).map(lambda tail: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + tail),
    )
)
def test_any_bytes_are_an_answer_incomplete_or_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(httpx.RemoteProtocolError):
        found = _parse(bytearray(data))
        assert found is None or len(found.body) <= MAX_ANSWER_BYTES
