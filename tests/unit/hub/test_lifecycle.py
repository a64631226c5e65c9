"""The socket `hub serve --workers N` hands its workers: connections accepted on it have Nagle turned off."""

from __future__ import annotations

import asyncio
import multiprocessing.reduction
import pickle
import socket

import uvicorn

from edgefleet.hub.lifecycle import listening_socket


async def _app(scope: object, receive: object, send: object) -> None:  # never called: only the socket is served
    raise AssertionError("not served")


def _nodelay_of_accepted(listener: socket.socket) -> int:
    """Serve `listener` as a uvicorn worker does (asyncio, `sock=`) and read TCP_NODELAY of a connection it accepts."""
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            while not seen:
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 10))
    return seen[0]


def test_connections_accepted_on_the_workers_socket_have_nagle_off() -> None:
    config = uvicorn.Config(_app, host="127.0.0.1", port=0)
    # Before, the workers were given `config.bind_socket()` itself, on which Nagle stays on (uvicorn issue 3149).
    assert _nodelay_of_accepted(listening_socket(config)) == 1


def test_the_workers_socket_stays_tcp_when_passed_to_a_worker_process() -> None:
    listener = listening_socket(uvicorn.Config(_app, host="127.0.0.1", port=0))
    # The supervisor's workers are spawned: each gets the socket pickled, as multiprocessing does it.
    buffer = multiprocessing.reduction.ForkingPickler.dumps(listener)
    passed = pickle.loads(buffer)  # noqa: S301  # our own bytes, just made
    try:
        assert passed.proto == socket.IPPROTO_TCP
        assert passed.getsockname() == listener.getsockname()
    finally:
        passed.close()
        listener.close()
