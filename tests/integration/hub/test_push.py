"""Held device polls are woken, not re-read: a change answers them within a second, nothing costs nothing.

On SQLite the committing process wakes its own polls; on PostgreSQL every hub process hears
every commit through LISTEN/NOTIFY, and its listener comes back when its connection is
killed. The fallback re-read is 30 s, so an answer within 1.5 s can only be a wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll
from edgefleet.agent.identity import LocalIdentity
from edgefleet.hub.api import longpoll
from edgefleet.hub.api.app import create_app
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Store
from edgefleet.hub.db.listen import APPLICATION_NAME, CHANNEL, DeviceListener
from edgefleet.hub.notify import Notifier
from edgefleet.hub.records import AssignedBy, Assignment
from edgefleet.hub.services import device_state
from tests.conftest import POSTGRES_URL, Fleet, auth
from tests.e2e.conftest import RunningHub, _fresh_postgres, free_port, start_hub
from tests.publishing import Publisher, assign

pytestmark = pytest.mark.integration

PROMPT = 1.5
"""Seconds within which a woken poll answers; the fallback re-read would take 30."""
postgres_only = pytest.mark.parametrize(
    "database_url",
    [pytest.param("postgres", marks=pytest.mark.skipif(not POSTGRES_URL, reason="EDGEFLEET_TEST_POSTGRES_URL unset"))],
    indirect=True,
)


def test_the_fallback_is_far_slower_than_a_wake() -> None:
    assert longpoll.FALLBACK_SECONDS >= 10 * PROMPT


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("sensor", "1.0.0")
    return publisher


def poll(
    fleet: Fleet, device: LocalIdentity, etag: str | None = None, path: str = "/device/target", **params: Any
) -> Any:
    headers = {"If-None-Match": etag} if etag else {}
    return fleet.device_call(device, "GET", path, params=params, headers=headers)


@dataclass
class Held:
    """A poll the hub holds, sent in a thread of its own."""

    send: Callable[[], Any]
    answers: list[Any] = field(default_factory=list)
    returned_at: list[float] = field(default_factory=list)
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.answers.append(self.send())
        self.returned_at.append(time.monotonic())

    def result(self, *, changed_at: float) -> Any:
        """The answer, checked to have come within PROMPT seconds of the change."""
        self.thread.join(timeout=30)
        assert self.answers, "the held poll never returned"
        took = self.returned_at[0] - changed_at
        assert took < PROMPT, f"answered {took:.2f} s after the change: not woken"
        return self.answers[0]


def held(send: Callable[[], Any], *, settle: float = 0.5) -> Held:
    """Start `send` (a long-poll) in a thread and give the hub time to hold it."""
    poll = Held(send)
    poll.thread.start()
    time.sleep(settle)
    assert not poll.answers, "the poll was not held"
    return poll


def held_poll(
    fleet: Fleet, device: LocalIdentity, etag: str, *, wait: float = 20, path: str = "/device/target"
) -> Held:
    return held(lambda: poll(fleet, device, etag, path, wait=wait))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each device's target state is read."""
    counter: Counter[str] = Counter()
    target_state = device_state.target_state

    def counted(hub: Hub, device_id: str) -> Any:
        counter[device_id] += 1
        return target_state(hub, device_id)

    monkeypatch.setattr(device_state, "target_state", counted)
    return counter


def direct_assignment(device_id: str, app: str = "direct") -> Assignment:
    return Assignment(
        device_id=device_id,
        app=app,
        version="1.0.0",
        release_counter=1,
        rollback=False,
        assigned_by=AssignedBy.operator("test"),
        assigned_at=datetime.now(UTC),
    )


# --- one process ---------------------------------------------------------------------------


CHANGES: dict[str, Callable[[Fleet, str], Any]] = {
    "assignment": lambda fleet, device_id: assign(fleet, device_id, "sensor@1.0.0"),
    "retry": lambda fleet, device_id: fleet.call("POST", f"/devices/{device_id}/retry"),
    "device environment": lambda fleet, device_id: fleet.call(
        "PUT", f"/devices/{device_id}/environment/MODE", json={"value": "eco"}
    ),
    "fleet environment": lambda fleet, _device_id: fleet.call(
        "PUT", "/fleets/f1/environment/MODE", json={"value": "eco"}
    ),
    "revocation": lambda fleet, device_id: fleet.call("POST", f"/devices/{device_id}/revoke"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_answers_a_held_target_poll_within_a_second(fleet: Fleet, publisher: Publisher, change: str) -> None:
    device = fleet.enroll()
    if change == "retry":
        assert assign(fleet, device.device_id, "sensor@1.0.0").status_code == 200
    first = poll(fleet, device)
    waiting = held_poll(fleet, device, first.headers["etag"])
    changed_at = time.monotonic()
    response = CHANGES[change](fleet, device.device_id)
    assert response.status_code == 200, response.text
    answer = waiting.result(changed_at=changed_at)
    if change == "revocation":
        assert (answer.status_code, answer.json()["code"]) == (403, "device_revoked")
    else:
        assert answer.status_code == 200
        assert answer.json() != first.json()
        assert answer.headers["etag"] != first.headers["etag"]


def test_an_acceptance_answers_a_held_self_poll_within_a_second(fleet: Fleet) -> None:
    device = fleet.enroll(fleet.enrollment_token(require_approval=True))
    etag = poll(fleet, device, path="/device/self").headers["etag"]
    waiting = held_poll(fleet, device, etag, path="/device/self")
    changed_at = time.monotonic()
    assert fleet.call("POST", f"/devices/{device.device_id}/accept").status_code == 200
    answer = waiting.result(changed_at=changed_at)
    assert answer.status_code == 200
    assert answer.json()["status"] == "accepted"


def test_a_held_poll_reads_nothing_while_its_device_is_unchanged(
    fleet: Fleet, publisher: Publisher, reads: Counter[str]
) -> None:
    device, other = fleet.enroll(), fleet.enroll()
    caught_up(fleet.hub)  # their enrollments' notifications are in: nothing drops what the next poll caches
    etag = poll(fleet, device).headers["etag"]
    reads.clear()
    statements: list[str] = []

    def count_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(fleet.hub.store.engine, "before_cursor_execute", count_statement)
    try:
        waiting = held_poll(fleet, device, etag, wait=3)
        time.sleep(1.2)
        # Its device's record and answer are this process's, from the poll before: not even the start reads.
        touched = [s for s in statements if "last_seen_at" not in s]  # the batched last-seen write may fall here
        assert touched == [], "a held poll must not touch the database while nothing changes"
        # Another device's change wakes only that device's polls.
        assert assign(fleet, other.device_id, "sensor@1.0.0").status_code == 200
        waiting.thread.join(timeout=10)
    finally:
        event.remove(fleet.hub.store.engine, "before_cursor_execute", count_statement)
    assert waiting.answers[0].status_code == 304
    assert reads[device.device_id] == 0, "its answer was cached by the poll before, and nothing changed it"
    assert fleet.hub.notifier.waiting() == 0


def test_a_rolled_back_change_wakes_nobody(fleet: Fleet, reads: Counter[str]) -> None:
    device = fleet.enroll()
    caught_up(fleet.hub)
    etag = poll(fleet, device).headers["etag"]
    reads.clear()
    waiting = held_poll(fleet, device, etag, wait=2)
    with contextlib.suppress(RuntimeError), fleet.hub.store.transaction() as tx:
        tx.put_assignment(direct_assignment(device.device_id))
        raise RuntimeError("changed my mind")
    waiting.thread.join(timeout=10)
    assert waiting.answers[0].status_code == 304
    assert reads[device.device_id] == 0  # not woken, and its answer still the cached one


# --- several processes on one PostgreSQL database --------------------------------------------


def listener_of(api: TestClient) -> DeviceListener:
    listener: DeviceListener = api.app.state.listener  # type: ignore[attr-defined]
    assert listener.listening.wait(10), "the listener never connected"
    return listener


def admin_dsn(hub: Hub) -> str:
    return hub.store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def listener_backends(hub: Hub) -> set[int]:
    with psycopg.connect(admin_dsn(hub), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            (APPLICATION_NAME,),
        ).fetchall()
    return {row[0] for row in rows}


def caught_up(hub: Hub) -> None:
    """On PostgreSQL, wait until `hub`'s listener has heard every change committed so far (its own too).

    PostgreSQL delivers notifications in commit order: once a marker sent now arrives, so has
    everything committed before it.
    """
    if hub.store.dialect != "postgresql":
        return  # SQLite: the committing process forgets and wakes before the commit returns
    marker = f"marker-{uuid.uuid4()}"
    heard: list[str] = []
    hub.notifier.watch(lambda ids: heard.extend(ids or ()))
    with psycopg.connect(admin_dsn(hub), autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, marker))
    deadline = time.monotonic() + 5
    while marker not in heard:
        assert time.monotonic() < deadline, "the listener did not hear the marker"
        time.sleep(0.01)


@postgres_only
def test_a_change_through_another_hub_answers_a_held_poll_within_a_second(
    fleet: Fleet, publisher: Publisher, hub: Hub, api: TestClient, tmp_path: Path
) -> None:
    listener_of(api)
    other = Hub(settings=hub.settings, store=Store(hub.store.url), keys=hub.keys, clock=hub.clock)
    try:
        with TestClient(create_app(other), raise_server_exceptions=False) as other_api:
            elsewhere = Fleet(api=other_api, hub=other, admin=fleet.admin, clock=fleet.clock, tmp=tmp_path)
            device = fleet.enroll()
            etag = poll(fleet, device).headers["etag"]
            waiting = held_poll(fleet, device, etag)
            changed_at = time.monotonic()
            assert assign(elsewhere, device.device_id, "sensor@1.0.0").status_code == 200
            answer = waiting.result(changed_at=changed_at)
            assert answer.json()["apps"]["sensor"]["version"] == "1.0.0"

            # And the other way round: a poll held by the other hub, a change through this one.
            etag = answer.headers["etag"]
            waiting = held(lambda: poll(elsewhere, device, etag, wait=20))
            changed_at = time.monotonic()
            assert fleet.call("PUT", "/fleets/f1/environment/MODE", json={"value": "eco"}).status_code == 200
            assert waiting.result(changed_at=changed_at).json()["environment"] == {"MODE": "eco"}
    finally:
        other.store.dispose()


@postgres_only
def test_the_listener_comes_back_after_its_connection_is_killed(
    fleet: Fleet, publisher: Publisher, hub: Hub, api: TestClient
) -> None:
    listener = listener_of(api)
    killed = listener.backend_pid
    assert killed in listener_backends(hub)
    with psycopg.connect(admin_dsn(hub), autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (killed,)).fetchone() == (True,)
    deadline = time.monotonic() + 15
    while not (listener.listening.is_set() and listener.backend_pid != killed):
        assert time.monotonic() < deadline, "the listener did not reconnect"
        time.sleep(0.05)
    assert listener.backend_pid in listener_backends(hub)

    device = fleet.enroll()
    etag = poll(fleet, device).headers["etag"]
    waiting = held_poll(fleet, device, etag)
    changed_at = time.monotonic()
    assert assign(fleet, device.device_id, "sensor@1.0.0").status_code == 200
    assert waiting.result(changed_at=changed_at).status_code == 200


@postgres_only
def test_a_reconnected_listener_wakes_every_held_request(hub: Hub) -> None:
    """Notifications sent while the connection was down are lost: after reconnecting, everyone reads again."""
    notifier = Notifier()
    listener = DeviceListener(admin_dsn(hub), notifier, application_name="edgefleet-test-listen")
    listener.start()
    try:
        assert listener.listening.wait(10)
        killed = listener.backend_pid

        async def held_across_the_outage() -> bool:
            with notifier.subscribe("some-device") as changes:
                with psycopg.connect(admin_dsn(hub), autocommit=True) as conn:
                    conn.execute("SELECT pg_terminate_backend(%s)", (killed,))
                return await changes.wait(10)

        started = time.monotonic()
        assert asyncio.run(held_across_the_outage()) is True
        assert time.monotonic() - started < 5
        assert listener.backend_pid != killed
    finally:
        listener.stop()
    assert not listener.listening.is_set()


# --- two real `hub serve` processes ------------------------------------------------------------


def serve_again(first: RunningHub, tmp_path: Path) -> Iterator[str]:
    """A second `edgefleet hub serve` on the first one's data dir and database, until the test ends."""
    assert first.database_url
    port = free_port()
    log_path = tmp_path / "hub-b.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "edgefleet.cli.main", "hub", "serve", "--data-dir", str(first.data_dir)),
                *("--bind", f"127.0.0.1:{port}", "--database-url", first.database_url),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        url = f"https://127.0.0.1:{port}"
        context = ssl.create_default_context(cafile=str(first.ca))
        deadline = time.monotonic() + 30
        try:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", verify=context, timeout=2).status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"second hub did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def two_hub_processes(tmp_path: Path) -> Iterator[tuple[RunningHub, str]]:
    for database in _fresh_postgres():
        for first in start_hub(tmp_path, database):
            for second in serve_again(first, tmp_path):
                yield first, second


@pytest.mark.slow
@pytest.mark.skipif(not POSTGRES_URL, reason="EDGEFLEET_TEST_POSTGRES_URL unset")
def test_two_hub_processes_answer_each_others_held_polls_within_a_second(
    two_hub_processes: tuple[RunningHub, str], tmp_path: Path
) -> None:
    first, second = two_hub_processes
    created = first.cli("token", "create", "--fleet", "f1", "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["token"]
    context = ssl.create_default_context(cafile=str(first.ca))

    def operator(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{url}/api/v1{path}", headers=auth(first.admin_token), verify=context, timeout=10, **kwargs
        )

    with (
        DeviceClient.connect(first.url, ca=first.ca) as on_first,
        DeviceClient.connect(second, ca=first.ca) as on_second,
    ):
        device = enroll(on_first, tmp_path / "device", token=token)
        _, etag = on_first.target_state(device)

        # Held by the first process, changed through the second.
        waiting = held(lambda: on_first.target_state(device, wait=20, etag=etag))
        changed_at = time.monotonic()
        assert operator(
            second, "PUT", f"/devices/{device.device_id}/environment/MODE", json={"value": "eco"}
        ).is_success
        state, etag = waiting.result(changed_at=changed_at)
        assert state is not None
        assert state.environment == {"MODE": "eco"}

        # Held by the second process, changed through the first (a fleet-wide change).
        waiting = held(lambda: on_second.target_state(device, wait=20, etag=etag))
        changed_at = time.monotonic()
        assert operator(first.url, "PUT", "/fleets/f1/environment/REGION", json={"value": "eu"}).is_success
        state, etag = waiting.result(changed_at=changed_at)
        assert state is not None
        assert state.environment == {"MODE": "eco", "REGION": "eu"}

        # Held by the first process, changed by a third one writing to the database directly.
        waiting = held(lambda: on_first.target_state(device, wait=20, etag=etag))
        assert first.database_url
        store = Store("postgresql+psycopg://" + first.database_url.split("://", 1)[1])
        try:
            changed_at = time.monotonic()
            with store.transaction() as tx:
                tx.put_assignment(direct_assignment(device.device_id))
        finally:
            store.dispose()
        state, _ = waiting.result(changed_at=changed_at)
        assert state is not None
        assert list(state.apps) == ["direct"]
