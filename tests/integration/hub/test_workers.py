"""`hub serve --workers N`: several processes on one port and one PostgreSQL database, as one hub.

The parent applies migrations, runs the scheduler and keeps N workers running; each worker
has its own caches and change listener. Connections are spread over the workers by the kernel,
so a test that opens a fresh connection per request reaches all of them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll
from edgefleet.agent.identity import LocalIdentity
from edgefleet.hub.db.listen import APPLICATION_NAME
from tests.conftest import POSTGRES_URL, auth
from tests.e2e.conftest import RunningHub, _fresh_postgres, edgefleet, start_hub, wait_for

pytestmark = [pytest.mark.skipif(not POSTGRES_URL, reason="EDGEFLEET_TEST_POSTGRES_URL unset"), pytest.mark.slow]
WORKERS = 2


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    tmp_path = tmp_path_factory.mktemp("workers")
    for database in _fresh_postgres():
        yield from start_hub(tmp_path, database, serve_args=("--workers", str(WORKERS)))


def fresh(hub: RunningHub, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    """One request on a connection of its own (so the kernel may hand it to any worker)."""
    with httpx.Client(verify=ssl.create_default_context(cafile=str(hub.ca)), timeout=30) as http:
        return http.request(method, f"{hub.url}{path}", headers=auth(token), **kwargs)


def listeners(hub: RunningHub) -> set[int]:
    """The backends of the hub's change listeners: one per worker, and the supervisor's for its scheduler."""
    assert hub.database_url is not None
    with psycopg.connect(hub.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            (APPLICATION_NAME,),
        ).fetchall()
    return {row[0] for row in rows}


def worker_pids(hub: RunningHub) -> set[int]:
    children = Path(f"/proc/{hub.process.pid}/task/{hub.process.pid}/children").read_text().split()
    # uvicorn's spawn start method also runs a resource tracker: the workers are the ones serving the app.
    return {int(pid) for pid in children if "multiprocessing.resource_tracker" not in _cmdline(int(pid))}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def enrolled(hub: RunningHub, tmp_path: Path) -> LocalIdentity:
    token = hub.call("POST", "/enrollment-tokens", json={"fleet": "f1"}).json()["token"]
    with DeviceClient.connect(hub.url, ca=hub.ca) as client:
        return enroll(client, tmp_path / "device", token=token, arch="arm64")


def requests_counted(hub: RunningHub, route: str) -> float:
    text = fresh(hub, "GET", "/metrics", hub.admin_token).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "edgefleet_http_requests_total" and sample.labels.get("route") == route
    )


def test_each_worker_listens_and_metrics_add_up_over_all_of_them(workers: RunningHub) -> None:
    # The supervisor listens too: without it, its scheduler's fleet view read every device on every pass.
    wait_for(lambda: len(listeners(workers)) == WORKERS + 1, f"{WORKERS + 1} listeners", timeout=30)
    before = requests_counted(workers, "/healthz")
    for _ in range(20):
        assert fresh(workers, "GET", "/healthz", workers.admin_token).status_code == 200
    assert requests_counted(workers, "/healthz") == before + 20  # whichever worker answered each


def connection_owners(hub: RunningHub) -> set[int]:
    """The processes holding the hub's established connections (`ss`)."""
    port = hub.url.rsplit(":", 1)[1]
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
    )
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out.stdout)}


def test_a_revocation_through_one_worker_refuses_the_device_at_every_worker(
    workers: RunningHub, tmp_path: Path
) -> None:
    device = enrolled(workers, tmp_path)
    path = f"{workers.url}/api/v1/device/target"
    context = ssl.create_default_context(cafile=str(workers.ca))

    def poll(client: httpx.Client) -> int:
        return client.get(path, headers=auth(device.token(now=datetime.now(UTC)))).status_code

    with ExitStack() as stack, ThreadPoolExecutor(16) as pool:
        # Keep-alive connections opened at once, 16 more until every worker holds some: the kernel
        # hands each to whichever worker accepts first (on a busy machine one may take them all).
        clients: list[httpx.Client] = []
        for _ in range(8):
            more = [stack.enter_context(httpx.Client(verify=context, timeout=30)) for _ in range(16)]
            assert set(pool.map(poll, more)) == {200}  # the worker of each now holds the device in its cache
            clients += more
            if connection_owners(workers) == worker_pids(workers):
                break
        assert connection_owners(workers) == worker_pids(workers), "every worker holds some connection"
        assert workers.call("POST", f"/devices/{device.device_id}/revoke").status_code == 200
        time.sleep(1)  # the workers that did not revoke hear of it through their listeners (milliseconds)
        assert set(pool.map(poll, clients)) == {403}


def resident(pids: set[int]) -> int:
    """Resident bytes of these processes, summed."""
    return sum(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") for pid in pids)


def test_an_idle_device_connection_costs_the_workers_under_200_kib(workers: RunningHub) -> None:
    """asyncio's own TLS read buffer is 256 KiB, zero-filled, per connection: 340 KiB resident per idle
    connection here. The hub reads through 16 KiB buffers (`edgefleet.tlsbuffers`): about 50 KiB."""
    wait_for(lambda: len(worker_pids(workers)) == WORKERS, f"{WORKERS} workers", timeout=30)
    pids = worker_pids(workers)
    port = int(workers.url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(workers.ca))
    count = 300
    with ExitStack() as stack:
        before = resident(pids)
        for _ in range(count):
            conn = stack.enter_context(
                context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="hub.test")
            )
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: hub.test\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(1)
        per_connection = (resident(pids) - before) / count
        assert worker_pids(workers) == pids
    assert per_connection < 200 * 1024, f"{per_connection / 1024:.0f} KiB per idle connection"


def test_a_killed_worker_is_replaced_and_the_hub_keeps_answering(workers: RunningHub) -> None:
    """A worker killed once it serves is replaced within seconds.

    The workers must have started first: uvicorn's supervisor pings each worker in turn and
    waits up to `WORKER_HEALTHCHECK_SECONDS` for the answer, and a worker killed before its
    answering thread ran never answers, so its replacement came only after that minute.
    Each worker's change listener connects once its app has started, after that thread.
    """
    wait_for(lambda: len(worker_pids(workers)) == WORKERS, f"{WORKERS} workers", timeout=30)
    wait_for(lambda: len(listeners(workers)) == WORKERS + 1, "every worker's listener", timeout=60)
    victim = min(worker_pids(workers))
    os.kill(victim, signal.SIGKILL)
    for _ in range(20):
        assert fresh(workers, "GET", "/healthz", workers.admin_token).status_code == 200
    wait_for(
        lambda: len(worker_pids(workers)) == WORKERS and victim not in worker_pids(workers), "a new worker", timeout=30
    )
    wait_for(lambda: len(listeners(workers)) == WORKERS + 1, "its listener", timeout=30)


def test_a_worker_killed_while_its_supervisor_waits_for_its_answer_is_replaced_at_once(workers: RunningHub) -> None:
    """The supervisor waits up to a minute for a worker's answer to its health check; a death ends the wait.

    A stopped worker cannot answer, so within a second the supervisor is waiting on it; killed
    then, it was replaced only once that minute was up (uvicorn kept the pipe's other end open).
    """
    wait_for(lambda: len(worker_pids(workers)) == WORKERS, f"{WORKERS} workers", timeout=30)
    wait_for(lambda: len(listeners(workers)) == WORKERS + 1, "every worker's listener", timeout=60)
    victim = max(worker_pids(workers))
    os.kill(victim, signal.SIGSTOP)
    time.sleep(2)  # the supervisor asks every half second
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(worker_pids(workers)) == WORKERS and victim not in worker_pids(workers), "a new worker", timeout=20
    )
    assert fresh(workers, "GET", "/healthz", workers.admin_token).status_code == 200


def test_sqlite_says_it_serves_one_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    assert edgefleet("hub", "init", "--data-dir", str(data_dir)).returncode == 0
    refused = edgefleet("hub", "serve", "--data-dir", str(data_dir), "--workers", "2")
    assert refused.returncode == 2
    assert "SQLite serves one process: --workers needs PostgreSQL" in refused.stderr


def test_answers_on_a_kept_alive_connection_are_not_held_back_by_nagle(workers: RunningHub) -> None:
    """An answer's body leaves with its headers: with Nagle on, it waited for the client's delayed ACK (40 ms or more).

    uvicorn's supervisor bound the workers' socket so that asyncio left Nagle on (see
    `lifecycle.listening_socket`); every request but a connection's first then took over 40 ms.
    """
    with httpx.Client(verify=ssl.create_default_context(cafile=str(workers.ca)), timeout=30) as http:
        assert http.get(f"{workers.url}/healthz").status_code == 200  # a connection's first answer never waited
        took = []
        for _ in range(21):
            started = time.perf_counter()
            assert http.get(f"{workers.url}/healthz").status_code == 200
            took.append(time.perf_counter() - started)
    assert statistics.median(took) < 0.025, f"median {statistics.median(took) * 1000:.1f} ms"
