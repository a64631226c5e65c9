"""A rollout over 200 simulated devices on PostgreSQL, driven by two hub processes at once.

Two `edgefleet sim` processes (100 devices each, every one a real enrolled device speaking
the agent's protocol and verifying every release) talk to two `hub serve` processes on one
database; both processes run the rollout scheduler. A first deployment completes; a second
one, whose release fails often (the simulators' injected failures), pauses in its first
wave; aborting it with rollback returns that wave's devices to the first release. A trigger
added for the test counts every write to the assignments table, so a device assigned twice
by one rollout would show.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import POSTGRES_URL
from tests.e2e.conftest import RunningHub, _fresh_postgres, edgefleet, start_hub, start_sim, wait_for
from tests.e2e.test_releases_e2e import ok, publish_first_release, write_app
from tests.integration.hub.test_push import serve_again
from tests.integration.hub.test_rollout_replicas import COUNT_WRITES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not POSTGRES_URL, reason="EDGEFLEET_TEST_POSTGRES_URL unset"),
]
DEVICES_PER_SIM = 100


@pytest.fixture
def hubs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[RunningHub, str]]:
    monkeypatch.setenv("EDGEFLEET_ROLLOUT_INTERVAL_SECONDS", "0.3")
    monkeypatch.setenv("EDGEFLEET_LONG_POLL_MAX_SECONDS", "20")
    for database in _fresh_postgres():
        for first in start_hub(tmp_path, database):
            for second in serve_again(first, tmp_path):
                yield first, second


def simulate(hub: RunningHub, url: str, token: str, out: Path, seed: int) -> subprocess.Popen[str]:
    return start_sim(
        url,
        hub.ca,
        token,
        DEVICES_PER_SIM,
        out,
        *("--seed", str(seed), "--fail-rate", "0.4", "--download-time", "0.3", "--start-time", "0.3"),
        *("--report-interval", "10", "--poll-wait", "20", "--summary-interval", "5"),
    )


@pytest.mark.timeout(900)
def test_simulated_fleet_rollout_pause_and_rollback_with_two_hub_processes(
    hubs: tuple[RunningHub, str], tmp_path: Path
) -> None:
    first, second_url = hubs
    assert first.database_url
    keys = publish_first_release(first, tmp_path)
    build = tmp_path / "build-1.1.0"
    ok(edgefleet("release", "build", str(write_app(tmp_path, "1.1.0")), "--out", str(build)))
    ok(edgefleet("release", "sign", str(build), "--keys", str(keys)))
    ok(first.cli("release", "push", str(build)))
    with psycopg.connect(first.database_url, autocommit=True) as db:
        db.execute(COUNT_WRITES)
    created = first.cli("token", "create", "--fleet", "plant", "--tag", "env=prod", "--uses", "200", "--json")
    token = json.loads(ok(created))["token"]

    sims = [
        simulate(first, url, token, tmp_path / f"sim-{n}.json", seed=n)
        for n, url in enumerate((first.url, second_url), start=1)
    ]
    try:

        def accepted() -> bool:
            rows = json.loads(ok(first.cli("device", "list", "--status", "accepted", "--json")))
            return len(rows) == 2 * DEVICES_PER_SIM

        wait_for(accepted, "200 enrolled devices", timeout=300)

        def state(name: str) -> dict[str, Any]:
            return dict(json.loads(ok(first.cli("deploy", "status", name, "--json"))))

        # A first release for everyone, whatever fails (a threshold of 100% is never passed).
        ok(
            first.cli(
                "deploy", "create", "--release", "sensor@1.0.0", "--name", "base", "--target", "env=prod",
                "--waves", "10%,50%,100%", "--max-failure", "100%",
            )
        )  # fmt: skip
        base = wait_for(
            lambda: (found := state("base"))["deployment"]["state"] == "completed" and found,
            "base to complete",
            timeout=300,
        )
        assert [w["size"] for w in base["waves"]] == [20, 80, 100]
        assert sum(w["updated"] + w["failed"] for w in base["waves"]) == 200
        updated = sum(w["updated"] for w in base["waves"])
        assert 0 < updated < 200

        def running() -> dict[str, str | None]:
            with psycopg.connect(first.database_url) as db:
                rows = db.execute("SELECT id, reported -> 'apps' -> 'sensor' ->> 'version' FROM devices").fetchall()
            return dict(rows)

        before = wait_for(
            lambda: (found := running()) and list(found.values()).count("1.0.0") == updated and found,
            "the twins to show base's outcome",
        )

        # The next release fails 40% of the time: its first wave passes 5% and pauses it there.
        second = subprocess.run(
            [
                *(sys.executable, "-m", "edgefleet.cli.main", "deploy", "create", "--release", "sensor@1.1.0"),
                *("--name", "next", "--target", "env=prod", "--priority", "1", "--waves", "10%,100%"),
                *("--max-failure", "5%", "--hub", second_url, "--ca", str(first.ca), "--token", first.admin_token),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert second.returncode == 0, second.stderr
        paused = wait_for(
            lambda: (found := state("next"))["deployment"]["state"] == "paused" and found,
            "next to pause",
            timeout=300,
        )
        assert paused["deployment"]["wave"] == 1
        assert paused["deployment"]["reason"].startswith("wave 1: ")
        assert paused["waves"][0]["size"] == 20
        assert paused["waves"][1]["size"] == 0  # it never reached the second wave
        assert paused["waves"][0]["failed"] >= 2

        ok(first.cli("deploy", "abort", "next", "--rollback"))
        with psycopg.connect(first.database_url) as db:
            wave_one = [
                row[0]
                for row in db.execute(
                    "SELECT m.device_id FROM deployment_devices m JOIN deployments d ON d.id = m.deployment_id"
                    " WHERE d.name = 'next'"
                )
            ]
            assert len(wave_one) == 20

            had_base = [d for d in wave_one if before[d] == "1.0.0"]
            assert had_base

            def restored() -> bool:
                # Those that ran 1.0.0 before run it again. (Where 1.0.0 failed, the simulator fails it
                # again: such a device keeps 1.1.0, as a real one keeps what runs when a rollback fails.)
                now = running()
                return all(now[d] == "1.0.0" for d in had_base)

            wait_for(restored, "wave 1 back on 1.0.0", timeout=300)
            versions = db.execute(
                "SELECT a.version, a.assigned_by FROM assignments a WHERE a.device_id = ANY(%s)", (wave_one,)
            ).fetchall()
            assert {version for version, _ in versions} <= {"1.0.0"}
            writes = dict(db.execute("SELECT device_id, count(*) FROM assignment_writes GROUP BY device_id").fetchall())
        assert len(writes) == 200
        for device_id, count in writes.items():
            expected = 3 if device_id in wave_one else 1  # base's assignment; then next's and its rollback
            assert count == expected, f"{device_id} was written {count} times"
    finally:
        for sim in sims:
            sim.send_signal(signal.SIGTERM)
        for sim in sims:
            sim.wait(timeout=60)
    for n, sim in enumerate(sims, start=1):
        assert sim.returncode == 0, (tmp_path / f"sim-{n}.log").read_text()[-3000:]
        summary = json.loads((tmp_path / f"sim-{n}.json").read_text())
        assert summary["refused"] == 0  # every release verified on every simulated device
