"""Two hub replicas behind a real HAProxy on one PostgreSQL database, one of them SIGKILLed mid-rollout.

Devices (an `edgefleet sim`, every one enrolled and verifying every release) and the operator's
CLI reach the hub only through HAProxy (TCP mode: TLS passes through to the replicas, as in
deploy/compose/haproxy.cfg). One replica is killed with SIGKILL while the rollout is under way;
HAProxy's health check takes it out, the other replica's scheduler finishes the rollout, every
device ends on the release, none is assigned twice (a trigger counts writes to the
assignments table), and every device's update reached the hub (its latest outcome recorded).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import POSTGRES_URL
from tests.e2e.conftest import (
    RunningHub,
    _fresh_postgres,
    edgefleet,
    free_port,
    start_hub,
    start_sim,
    wait_for,
)
from tests.e2e.test_releases_e2e import ok, publish_first_release
from tests.integration.hub.test_push import serve_again
from tests.integration.hub.test_rollout_replicas import COUNT_WRITES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not POSTGRES_URL, reason="EDGEFLEET_TEST_POSTGRES_URL unset"),
]
DEVICES = 40
HAPROXY = "/usr/sbin/haproxy"
CONFIG = """
global
    maxconn 4096

defaults
    mode tcp
    timeout connect 2s
    timeout client 90s
    timeout server 90s

frontend hub
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option tcp-check
    server a 127.0.0.1:{a} check inter 300ms fall 2 rise 2
    server b 127.0.0.1:{b} check inter 300ms fall 2 rise 2
"""


def haproxy(tmp_path: Path, a: str, b: str) -> Iterator[str]:
    """HAProxy in front of the two replicas (URLs), in the foreground of a child process, until the test ends."""
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.format(port=port, a=a.rsplit(":", 1)[1], b=b.rsplit(":", 1)[1]))
    checked = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    log = (tmp_path / "haproxy.log").open("w")
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def balanced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[RunningHub, str]]:
    """(the first replica, the balancer's URL); the second replica serves the same data dir and database."""
    monkeypatch.setenv("EDGEFLEET_ROLLOUT_INTERVAL_SECONDS", "0.3")
    monkeypatch.setenv("EDGEFLEET_LONG_POLL_MAX_SECONDS", "20")
    for database in _fresh_postgres():
        for first in start_hub(tmp_path, database):
            for second in serve_again(first, tmp_path):
                for url in haproxy(tmp_path, first.url, second):
                    yield first, url


def through(hub: RunningHub, url: str, *args: str) -> str:
    """The CLI, as the admin, through the balancer."""
    return ok(edgefleet(*args, env={**hub.env(), "EDGEFLEET_HUB": url}))


@pytest.mark.timeout(900)
def test_a_rollout_through_haproxy_completes_when_a_replica_is_killed(
    balanced: tuple[RunningHub, str], tmp_path: Path
) -> None:
    first, url = balanced
    assert first.database_url
    publish_first_release(first, tmp_path)
    with psycopg.connect(first.database_url, autocommit=True) as db:
        db.execute(COUNT_WRITES)
    token = json.loads(through(first, url, "token", "create", "--fleet", "plant", "--uses", str(DEVICES), "--json"))
    sim = start_sim(
        url,
        first.ca,
        token["token"],
        DEVICES,
        tmp_path / "sim.json",
        *("--seed", "7", "--fail-rate", "0", "--download-time", "1", "--start-time", "1"),
        *("--report-interval", "10", "--poll-wait", "20", "--summary-interval", "5"),
    )
    try:

        def enrolled() -> bool:
            rows = json.loads(through(first, url, "device", "list", "--status", "accepted", "--json"))
            return len(rows) == DEVICES

        wait_for(enrolled, f"{DEVICES} devices enrolled through the balancer", timeout=300)

        def status() -> dict[str, Any]:
            return dict(json.loads(through(first, url, "deploy", "status", "fleet", "--json")))

        through(
            first, url, "deploy", "create", "--release", "sensor@1.0.0", "--name", "fleet", "--target", "fleet=plant",
            "--waves", "10%,50%,100%", "--bake", "0",
        )  # fmt: skip
        wait_for(lambda: status()["waves"][0]["updated"] >= 1, "the first devices updated", timeout=300)
        os.kill(first.process.pid, signal.SIGKILL)  # mid-rollout: waves 2 and 3 are still to come
        killed_at = time.monotonic()
        done = wait_for(
            lambda: (found := status())["deployment"]["state"] == "completed" and found,
            "the rollout to complete on the other replica",
            timeout=600,
        )
        assert sum(w["updated"] for w in done["waves"]) == DEVICES
        assert sum(w["failed"] for w in done["waves"]) == 0
        took = time.monotonic() - killed_at

        with psycopg.connect(first.database_url) as db:
            writes = dict(db.execute("SELECT device_id, count(*) FROM assignment_writes GROUP BY device_id"))
            running = dict(db.execute("SELECT id, reported -> 'apps' -> 'sensor' ->> 'version' FROM devices"))
            outcomes = dict(db.execute("SELECT device_id, status FROM device_updates WHERE app = 'sensor'"))
        assert len(writes) == DEVICES
        assert set(writes.values()) == {1}, "a device was assigned more than once"

        def reported() -> bool:
            with psycopg.connect(first.database_url) as db:
                rows = db.execute("SELECT reported -> 'apps' -> 'sensor' ->> 'version' FROM devices").fetchall()
            return [row[0] for row in rows] == ["1.0.0"] * DEVICES

        wait_for(reported, "every twin to show 1.0.0", timeout=120)
        assert len(running) == DEVICES
        assert outcomes == dict.fromkeys(writes, "committed"), "an update's outcome did not reach the hub"
        assert took < 600
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=60)
    assert sim.returncode == 0, (tmp_path / "sim.log").read_text()[-3000:]
    summary = json.loads((tmp_path / "sim.json").read_text())
    assert summary["refused"] == 0  # every release verified on every simulated device
