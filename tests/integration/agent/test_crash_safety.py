"""Crash safety with real processes: the agent dies by SIGKILL at every update phase of every
strategy (the whole device loses power; the containers alone are killed mid-switch), then
starts again; the device ends on exactly its old or its new release.

A hub process over HTTPS, the real agent command (a test-only wrapper adds the fault hook),
real engines. After the restart: every service of one release runs, nothing else of the
app is left, the installed record says which, the journal has no unfinished or unsettled
transaction, and the hub's audit log has exactly one outcome per transaction: a kill just
after commit is not a second update, a kill while a failed release rolls back does not
start it again.
"""

from __future__ import annotations

import json
import secrets
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgefleet.agent.engine.docker import DockerEngine
from edgefleet.agent.identity import saved_device_id
from edgefleet.agent.journal import FORWARD
from tests.e2e.conftest import RunningHub, edgefleet, start_hub
from tests.integration.agent.conftest import docker_client
from tests.integration.agent.test_agent_runner import app_text
from tests.integration.agent.test_engine import wait_running

pytestmark = pytest.mark.xdist_group("podman")

FAILING = "echo starting; exit 3"


@dataclass
class Device:
    hub: RunningHub
    config: Path
    data_dir: Path
    app: str
    id: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`edgefleet-agent run` (the agent's own command: it loads no hub code, so it starts in a third the time)."""
        command = [sys.executable, "-m", "edgefleet.cli.agent", "run", "--config", str(self.config), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=180)

    def crash_at(self, phase: str, *flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tests.integration.agent.faulty_agent", str(self.config), phase, *flags]
        return subprocess.run(command, capture_output=True, text=True, timeout=180)

    def assign(self, version: str, *, rollback: bool = False) -> None:
        body = {"app": self.app, "version": version, "rollback": rollback}
        assigned = self.hub.call("POST", f"/devices/{self.id}/assignments", json=body)
        assert assigned.status_code == 200, assigned.text

    def installed(self) -> str:
        """The release the agent's installed record says the app runs."""
        return str(json.loads((self.data_dir / "installed.json").read_text())["apps"][self.app]["version"])

    def transactions(self) -> list[tuple[int, str, str, int]]:
        """(id, to_release, phase, settled) of every transaction in the journal, oldest first."""
        with sqlite3.connect(self.data_dir / "journal.db") as db:
            rows = db.execute("SELECT id, to_release, phase, settled FROM transactions ORDER BY id")
            return [(int(i), str(to), str(phase), int(settled)) for i, to, phase, settled in rows]

    def outcomes(self) -> list[dict[str, Any]]:
        return self.hub.update_outcomes(self.id)

    def attempts(self) -> int:
        with sqlite3.connect(self.data_dir / "journal.db") as db:
            return int(db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0])

    def unfinished(self) -> list[str]:
        with sqlite3.connect(self.data_dir / "journal.db") as db:
            rows = db.execute("SELECT phase FROM transactions WHERE phase NOT IN ('committed', 'rolled-back')")
            return [phase for (phase,) in rows]


@dataclass
class Published:
    """A hub serving APP 1.0.0 and, per update strategy, two healthy releases and one that fails at start.

    1.1.0 (healthy) and 1.2.0 (fails) are download-then-kill, as is 1.0.0; the rest are in
    `STRATEGY_RELEASES`. Shared by the module's tests.
    """

    hub: RunningHub
    app: str
    root: Path
    order: list[str]
    """Versions in the order published (release counters grow in that order)."""


STRATEGY_RELEASES = {
    "download-then-kill": ("1.1.0", "1.3.0", "1.2.0"),
    "kill-then-download": ("2.1.0", "2.3.0", "2.2.0"),
    "hand-over": ("3.1.0", "3.3.0", "3.2.0"),
}
"""Strategy -> two healthy releases and a failing one."""


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, busybox: str) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("crash-hub")
    hub = next(hub_process := start_hub(root, None))
    keys = root / "keys"
    assert edgefleet("keys", "init", "--dir", str(keys)).returncode == 0
    assert hub.cli("repo", "init", "--keys", str(keys)).returncode == 0
    app = f"crash-{secrets.token_hex(3)}"
    releases = [("1.0.0", "download-then-kill", None)]
    for strategy, (healthy, other, failing) in STRATEGY_RELEASES.items():
        releases += [(healthy, strategy, None), (failing, strategy, FAILING), (other, strategy, None)]
    for version, strategy, web in releases:
        source = root / f"app-{version}"
        source.mkdir()
        extra = {"web": web} if web else {"web_env": version}
        (source / "compose.yaml").write_text(app_text(app, version, busybox, strategy=strategy, **extra))
        published = hub.cli("release", "publish", str(source), "--keys", str(keys))
        assert published.returncode == 0, published.stderr
    (root / "policy.toml").write_text('allow = ["network"]\n')
    yield Published(hub, app, root, [version for version, _, _ in releases])
    next(hub_process, None)


@pytest.fixture
def device(tmp_path: Path, engine_socket: str, published: Published, apps: list[str]) -> Device:
    """A new device of the shared hub, running APP 1.0.0 (what it leaves in the engine goes with the test)."""
    hub = published.hub
    apps.append(published.app)  # one device at a time runs the app; the `apps` fixture removes its objects
    token = hub.call("POST", "/enrollment-tokens", json={"fleet": "lab"}).json()["token"]
    data_dir = tmp_path / "dev"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'hub_url = "{hub.url}"\nca = "{hub.ca}"\nenrollment_token = "{token}"\ndata_dir = "{data_dir}"\n'
        f'engine = "{engine_socket}"\npolicy = "{published.root / "policy.toml"}"\narch = "amd64"\npoll_wait = 0\n'
        f'repository_root = "{published.root / "keys" / "repository" / "root.json"}"\n'
    )
    made = Device(hub, config, data_dir, published.app, "")
    enrolled = made.run("--once")
    assert enrolled.returncode == 0, enrolled.stderr
    made.id = saved_device_id(data_dir) or ""
    made.assign("1.0.0")
    assert made.run("--once").returncode == 0
    return made


def releases_running(engine_socket: str, device: Device) -> dict[str, str]:
    """service -> release of every container the device has for its app (all of them, running or not)."""
    engine = DockerEngine(engine_socket, owner=device.id)
    try:
        found = docker_client(engine).containers.list(all=True, filters={"label": f"io.edgefleet.app={device.app}"})
        assert all(c.status == "running" for c in found), [(c.name, c.status) for c in found]
        services = [c.labels["io.edgefleet.service"] for c in found]
        assert sorted(services) == ["db", "web"], services  # no orphans, nothing missing
        return {c.labels["io.edgefleet.service"]: c.labels["io.edgefleet.release"] for c in found}
    finally:
        engine.close()


HEALTHY_CASES = [*FORWARD, "settling"]
"""Where the agent dies on the way to a healthy release: every journaled phase, then between the
committed transaction's bookkeeping and its settled mark."""
FAILING_CASES = ["rolling-back", "rolled-back", "settling"]
"""Where it dies once a failing release was judged: rolling back, rolled back, settling."""


@pytest.mark.parametrize("strategy", list(STRATEGY_RELEASES))
def test_a_sigkill_in_every_phase_of_a_strategy_ends_on_one_release_with_one_outcome_per_transaction(
    device: Device, published: Published, engine_socket: str, engine: DockerEngine, strategy: str
) -> None:
    """One device goes through every case in turn: from the release it runs, to the next one, killed at the case."""
    engine.owner = device.id
    healthy, other, failing = STRATEGY_RELEASES[strategy]
    running = "1.0.0"
    cases = [(phase, True) for phase in HEALTHY_CASES] + [(phase, False) for phase in FAILING_CASES]
    for index, (phase, good) in enumerate(cases):
        target = (other if running == healthy else healthy) if good else failing
        case = f"{strategy}: killed at {phase} on the way from {running} to {target}"
        seen_transactions = len(device.transactions())
        seen_outcomes = len(device.outcomes())
        if not good and index > len(HEALTHY_CASES):
            assert device.hub.cli("device", "retry", device.id).returncode == 0  # failed here before: a new try
        else:
            device.assign(target, rollback=published.order.index(target) < published.order.index(running))
        crashed = device.crash_at(phase)
        assert crashed.returncode == -signal.SIGKILL, (case, crashed.stderr[-2000:])
        restarted = device.run("--once")
        assert restarted.returncode == 0, (case, restarted.stderr[-2000:])

        ends_on = target if good else running
        wait_running(engine, device.app, 2)
        assert releases_running(engine_socket, device)["web"] == ends_on, case
        assert device.installed() == ends_on, case
        transactions = device.transactions()[seen_transactions:]
        assert all(phase in ("committed", "rolled-back") and settled for _, _, phase, settled in transactions), case
        outcomes = [(e["action"].removeprefix("device.update."), e["detail"]) for e in device.outcomes()]
        outcomes = outcomes[seen_outcomes:]
        assert len(outcomes) == len(transactions), (case, outcomes, transactions)  # one event per transaction
        assert all(detail["to_release"] == target for _, detail in outcomes), (case, outcomes)
        statuses = [status for status, _ in outcomes]
        if not good:  # judged failed: failed, and never started again (one transaction)
            assert statuses == ["failed"], (case, outcomes)
            if phase == "rolling-back":
                assert "its rollback was interrupted while rolling-back" in outcomes[0][1]["reason"], case
        elif phase in ("committed", "settling"):  # committed before the kill: the restart only records it
            assert statuses == ["committed"], (case, outcomes)
        else:  # rolled back at the restart, then carried out again
            assert statuses == ["interrupted", "committed"], (case, outcomes)
            assert outcomes[0][1]["reason"].startswith(f"interrupted while {phase}"), (case, outcomes)
        running = ends_on


@pytest.mark.parametrize("phase", ["staged", "switching", "probing"])
def test_power_loss_mid_update_ends_on_the_old_or_the_new_release(
    device: Device, engine_socket: str, engine: DockerEngine, phase: str
) -> None:
    device.assign("1.1.0")
    crashed = device.crash_at(phase, "--power-loss")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]

    # The device boots: the engine starts again every container that had run (old and new alike), then the agent.
    engine.owner = device.id
    for container in docker_client(engine).containers.list(
        all=True, filters={"label": f"io.edgefleet.app={device.app}"}
    ):
        if container.status == "exited":
            container.start()
    restarted = device.run("--once")
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    wait_running(engine, device.app, 2)
    assert releases_running(engine_socket, device)["web"] in ("1.0.0", "1.1.0")
    assert device.unfinished() == []


@pytest.mark.parametrize("phase", ["switching", "probing"])
def test_containers_killed_mid_switch_end_on_the_old_or_the_new_release(
    device: Device, engine_socket: str, engine: DockerEngine, phase: str
) -> None:
    device.assign("1.1.0")
    survived = device.crash_at(phase, "--containers-only")
    assert survived.returncode == 0, survived.stderr[-2000:]
    again = device.run("--once")  # the next cycle reconciles whatever the update left stopped
    assert again.returncode == 0, again.stderr[-2000:]
    engine.owner = device.id
    wait_running(engine, device.app, 2)
    assert releases_running(engine_socket, device)["web"] in ("1.0.0", "1.1.0")
    assert device.unfinished() == []


def test_a_release_that_keeps_killing_the_agent_is_not_tried_a_third_time(
    device: Device, engine_socket: str, engine: DockerEngine
) -> None:
    device.assign("1.1.0")
    for _ in range(2):  # each try dies while the new release is judged (as if it exhausted the device)
        crashed = device.crash_at("probing")
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    attempts = device.attempts()

    again = device.run("--once")
    assert again.returncode == 0, again.stderr[-2000:]
    assert device.attempts() == attempts  # rolled back, and not tried again
    engine.owner = device.id
    wait_running(engine, device.app, 2)
    assert releases_running(engine_socket, device)["web"] == "1.0.0"
    shown = json.loads(device.hub.cli("device", "show", device.id, "--json").stdout)["updates"][device.app]
    assert (shown["status"], shown["to_release"]) == ("failed", "1.1.0")
    assert "interrupted 2 times" in shown["reason"]

    # An operator's retry is a new decision: the release is tried (and, healthy now, commits).
    assert device.hub.cli("device", "retry", device.id).returncode == 0
    assert device.run("--once").returncode == 0
    wait_running(engine, device.app, 2)
    assert releases_running(engine_socket, device)["web"] == "1.1.0"
