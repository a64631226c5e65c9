"""Update transactions on real Podman: commit when healthy, roll back by themselves when not, and
recover from a crash at any phase onto exactly the old release (issue 5, first part)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgefleet.agent.engine.docker import DockerEngine
from edgefleet.agent.journal import FORWARD, Journal
from edgefleet.agent.reconcile import reconcile
from edgefleet.agent.spec import HostFacts, release_specs
from edgefleet.agent.transaction import Updater
from edgefleet.manifest import Release, parse_manifest
from tests.integration.agent.conftest import app_name
from tests.integration.agent.test_engine_podman import containers, desired, wait_running

pytestmark = pytest.mark.xdist_group("podman")

SERVE = "while true; do echo {word} | nc -l -p 8080; done"


def release(app: str, image: str, version: str, *, web: str, healthcheck: str = "") -> Release:
    return parse_manifest(f"""
services:
  db:
    image: {image}
    command: ["/bin/sh", "-c", "{SERVE.format(word="db")}"]
  web:
    image: {image}
    command: ["/bin/sh", "-c", "{web}"]
    depends_on: [db]
{healthcheck}
x-edgefleet:
  app: {app}
  version: {version}
  architectures: [amd64]
  services:
    db: {{resources: {{memory: 32m, cpus: 0.25, pids: 32}}}}
    web: {{resources: {{memory: 32m, cpus: 0.25, pids: 32}}}}
""")


def update(engine: DockerEngine, journal: Journal, new: Release, *, window: float = 3.0, fault=None):
    specs = {s.service: s for s in release_specs(new, facts=HostFacts(), environment={"FLEET": "lab"})}
    updater = Updater(engine, journal, clock=lambda: datetime.now(UTC), sleep=time.sleep, fault=fault)
    return updater.update(
        new.app, specs, from_release="1.0.0", to_release=new.version, health_window=window, restart_limit=2
    )


@pytest.fixture
def running(engine: DockerEngine, apps: list[str], busybox: str) -> tuple[str, dict[str, str]]:
    """An app on release 1.0.0 with both services running; returns (app, service -> container id)."""
    app = app_name(apps, "tx")
    reconcile(engine, desired(release(app, busybox, "1.0.0", web=SERVE.format(word="old"))))
    wait_running(engine, app, 2)
    return app, {name: c.id for name, c in containers(engine, app).items()}


def test_a_healthy_release_commits_and_retires_only_what_changed(
    engine: DockerEngine, running: tuple[str, dict[str, str]], busybox: str, tmp_path: Path
) -> None:
    app, before = running
    journal = Journal(tmp_path / "journal.db")
    check = '    healthcheck: {test: ["CMD", "/bin/true"], interval: 1s, retries: 2}'
    outcome = update(engine, journal, release(app, busybox, "1.1.0", web=SERVE.format(word="new"), healthcheck=check))

    assert outcome.committed, outcome
    assert outcome.transaction.phase == "committed"
    now = {name: c.id for name, c in containers(engine, app).items()}
    assert now["db"] == before["db"]
    assert now["web"] != before["web"]
    assert len(engine.client.containers.list(all=True, filters={"label": f"io.edgefleet.app={app}"})) == 2
    assert journal.unfinished() == []


@pytest.mark.parametrize(
    ("web", "healthcheck", "reason"),
    [
        # Depending on how quickly the engine restarts it, the first look sees the exit or the restarts.
        ("exit 3", "", "exited with code 3|restarted [0-9]+ times"),
        (
            SERVE.format(word="new"),
            '    healthcheck: {test: ["CMD", "/bin/false"], interval: 1s, retries: 2}',
            "healthcheck reports unhealthy|not healthy by the end",
        ),
        ("sleep 1; exit 1", "", "web"),
    ],
    ids=["exits-at-start", "never-healthy", "crash-loops-later"],
)
def test_a_failing_release_rolls_back_by_itself(
    engine: DockerEngine,
    running: tuple[str, dict[str, str]],
    busybox: str,
    tmp_path: Path,
    web: str,
    healthcheck: str,
    reason: str,
) -> None:
    app, before = running
    journal = Journal(tmp_path / "journal.db")
    outcome = update(engine, journal, release(app, busybox, "1.1.0", web=web, healthcheck=healthcheck), window=6)

    assert not outcome.committed
    assert outcome.transaction.phase == "rolled-back"
    assert re.search(reason, outcome.transaction.error or "")
    assert outcome.verdict is not None
    assert outcome.verdict.service == "web"
    wait_running(engine, app, 2)
    assert {name: c.id for name, c in containers(engine, app).items()} == before  # the very same containers
    assert journal.unfinished() == []


class Crash(BaseException):
    """Stands in for SIGKILL at a phase: nothing after it runs in this process."""


@pytest.mark.parametrize("phase", [*FORWARD[:-1]])
def test_a_crash_at_any_phase_recovers_onto_the_old_release(
    engine: DockerEngine,
    running: tuple[str, dict[str, str]],
    busybox: str,
    tmp_path: Path,
    podman_socket: str,
    phase: str,
) -> None:
    app, before = running

    def crash_at(reached: str) -> None:
        if reached == phase:
            raise Crash(phase)

    with pytest.raises(Crash):
        update(
            engine,
            Journal(tmp_path / "journal.db"),
            release(app, busybox, "1.1.0", web=SERVE.format(word="x")),
            fault=crash_at,
        )

    # A new agent process: a fresh engine client and journal, recovering before anything else.
    restarted = DockerEngine(podman_socket, owner=engine.owner)
    journal = Journal(tmp_path / "journal.db")
    recovered = Updater(restarted, journal, clock=lambda: datetime.now(UTC)).recover()
    assert [t.phase for t in recovered] == ["rolled-back"]
    wait_running(engine, app, 2)
    assert {name: c.id for name, c in containers(engine, app).items()} == before
    assert journal.unfinished() == []
    restarted.close()
