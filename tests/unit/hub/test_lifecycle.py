"""The socket `hub serve --workers N` hands its workers: connections accepted on it have Nagle turned off."""

from __future__ import annotations

import asyncio
import multiprocessing.reduction
import pickle
import socket
from pathlib import Path

import pytest
import uvicorn

from edgefleet.hub import lifecycle
from edgefleet.hub.lifecycle import init_hub, listening_socket
from edgefleet.hub.settings import HubSettings


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


# --- the collector's pacing (edgefleet.collector) in every process that serves -------------------


class _ServedError(Exception):
    """Raised by the stand-in server: serving began."""


@pytest.fixture
def paced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[HubSettings, list[str]]:
    """A hub's settings, and the record of pacing and opening the hub (pacing not applied to the test run)."""
    settings = HubSettings(data_dir=tmp_path / "hub")
    init_hub(settings, hostnames=("hub.test",))
    calls: list[str] = []
    monkeypatch.setattr(lifecycle, "pace_collector", lambda: calls.append("paced"))
    opened = lifecycle.open_hub
    monkeypatch.setattr(lifecycle, "open_hub", lambda s, **kw: (calls.append("opened"), opened(s, **kw))[1])
    monkeypatch.setattr(lifecycle, "limit_tls_read_buffers", lambda: True)
    return settings, calls


def test_a_one_process_hub_paces_its_collector_before_it_serves(
    paced: tuple[HubSettings, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, calls = paced

    class Server:
        def __init__(self, config: uvicorn.Config) -> None:
            pass

        def run(self) -> None:
            calls.append("served")
            raise _ServedError

    monkeypatch.setattr(lifecycle.uvicorn, "Server", Server)
    with pytest.raises(_ServedError):
        lifecycle.serve(settings, host="127.0.0.1", port=0)
    assert calls == ["paced", "opened", "served"]


def test_each_worker_paces_its_collector_before_it_opens_the_hub(
    paced: tuple[HubSettings, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, calls = paced
    monkeypatch.setenv(lifecycle.WORKER_SETTINGS, settings.model_dump_json())
    monkeypatch.delenv(lifecycle.METRICS_DIR, raising=False)
    app = lifecycle.worker_app()
    try:
        assert app.routes
    finally:
        app.state.hub.store.dispose()
    assert calls == ["paced", "opened"]  # before the hub's threads and connections
