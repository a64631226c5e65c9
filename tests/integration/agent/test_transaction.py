"""Update transactions on real engines: commit when healthy, roll back by themselves when not, and
recover from a crash at any phase onto exactly the old release (issue 5, first part).

Every strategy, committed and rolled back, is checked step by step with the same checks the
in-memory engine's unit tests use (`tests/update_matrix.py`), on Podman and Docker Engine.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.engine.docker import DockerEngine, network_name
from edgefleet.agent.errors import EngineError
from edgefleet.agent.health import ServiceHealth
from edgefleet.agent.journal import FORWARD, Journal
from edgefleet.agent.plan import RemoveContainer, Step
from edgefleet.agent.reconcile import reconcile
from edgefleet.agent.spec import ContainerSpec, HostFacts, release_specs
from edgefleet.agent.transaction import Updater
from edgefleet.manifest import Release, parse_manifest
from tests.integration.agent.conftest import app_name, docker_client, pin_bridge_mac
from tests.integration.agent.test_engine import containers, desired, sh, wait_running
from tests.update_matrix import STRATEGIES, Recorded, check_commit, check_rollback

pytestmark = pytest.mark.xdist_group("podman")

SERVE = "while true; do echo {word} | nc -l -p 8080; done"


def release(
    app: str,
    image: str,
    version: str,
    *,
    web: str,
    healthcheck: str = "",
    strategy: str = "download-then-kill",
    probes: str = "[]",
    db: str = "db",
) -> Release:
    return parse_manifest(f"""
services:
  db:
    image: {image}
    command: ["/bin/sh", "-c", "{SERVE.format(word=db)}"]
  web:
    image: {image}
    command: ["/bin/sh", "-c", "{web}"]
    depends_on: [db]
{healthcheck}
x-edgefleet:
  app: {app}
  version: {version}
  architectures: [amd64]
  update: {{strategy: {strategy}}}
  services:
    db: {{resources: {{memory: 32m, cpus: 0.25, pids: 32}}}}
    web: {{resources: {{memory: 32m, cpus: 0.25, pids: 32}}, probes: {probes}}}
""")


def update(
    engine: DockerEngine,
    journal: Journal,
    new: Release,
    *,
    window: float = 3.0,
    fault=None,
    restart_limit: int = 2,
    **options,
):
    specs = {s.service: s for s in release_specs(new, facts=HostFacts(), environment={"FLEET": "lab"})}
    updater = Updater(
        engine, journal, clock=lambda: datetime.now(UTC), sleep=time.sleep, fault=fault, **options.pop("updater", {})
    )
    return updater.update(
        new.app,
        specs,
        from_release="1.0.0",
        to_release=new.version,
        health_window=window,
        restart_limit=restart_limit,
        strategy=new.update.strategy,
        **options,
    )


def states(engine: DockerEngine, app: str) -> list[tuple[str, str, str]]:
    """(service, release, status) of every container of `app`, old and new alike."""
    found = docker_client(engine).containers.list(all=True, filters={"label": f"io.edgefleet.app={app}"})
    return sorted((c.labels["io.edgefleet.service"], c.labels["io.edgefleet.release"], c.status) for c in found)


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
    assert len(docker_client(engine).containers.list(all=True, filters={"label": f"io.edgefleet.app={app}"})) == 2
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


class Unlucky:
    """The real engine, looked at only while a container is running: the agent's every look at a
    crash loop falls in the moment between a restart and the next crash."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine

    def health(self, container_id: str) -> ServiceHealth:
        deadline = time.monotonic() + 5
        while True:
            state = self.engine.health(container_id)
            if state.state == "running" or time.monotonic() > deadline:
                return state
            time.sleep(0.005)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def test_a_crash_loop_seen_only_while_running_still_rolls_back(
    engine: DockerEngine, running: tuple[str, dict[str, str]], busybox: str, tmp_path: Path
) -> None:
    """Each look finds the service running, at a restart count higher than the last look's: not
    settled, so the window's end does not commit it; the restarts then pass the limit. (CI once
    committed such a release: its one look after the window fell between two crashes.)"""
    app, before = running
    journal = Journal(tmp_path / "journal.db")
    looping = release(app, busybox, "1.1.0", web="sleep 0.3; exit 4")
    outcome = update(cast(DockerEngine, Unlucky(engine)), journal, looping, window=2, restart_limit=5)

    assert outcome.status == "failed", outcome
    assert outcome.verdict is not None
    assert outcome.verdict.service == "web"
    assert re.search("restarted [0-9]+ times|exited", outcome.reason or ""), outcome.reason
    wait_running(engine, app, 2)
    assert {name: c.id for name, c in containers(engine, app).items()} == before


class Crash(BaseException):
    """Stands in for SIGKILL at a phase: nothing after it runs in this process."""


@pytest.mark.parametrize("phase", [*FORWARD[:-1]])
def test_a_crash_at_any_phase_recovers_onto_the_old_release(
    engine: DockerEngine,
    running: tuple[str, dict[str, str]],
    busybox: str,
    tmp_path: Path,
    engine_socket: str,
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
    restarted = DockerEngine(engine_socket, owner=engine.owner)
    journal = Journal(tmp_path / "journal.db")
    recovered = Updater(restarted, journal, clock=lambda: datetime.now(UTC)).recover()
    assert [t.phase for t in recovered] == ["rolled-back"]
    wait_running(engine, app, 2)
    assert {name: c.id for name, c in containers(engine, app).items()} == before
    assert journal.unfinished() == []
    restarted.close()


# --- update strategies ------------------------------------------------------------------

SEEN = {
    # What runs at a phase, per strategy: (web 1.0.0, web 1.1.0) status.
    "download-then-kill": {"switching": ("running", "created"), "probing": ("exited", "running")},
    "kill-then-download": {"downloaded": ("exited", None), "probing": ("exited", "running")},
    "hand-over": {"switching": ("running", "created"), "probing": ("running", "running")},
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_stops_the_old_release_at_its_own_moment_and_commits(
    engine: DockerEngine, running: tuple[str, dict[str, str]], busybox: str, tmp_path: Path, strategy: str
) -> None:
    app, before = running
    seen: dict[str, tuple[str | None, str | None]] = {}

    def look(phase: str) -> None:
        if phase in SEEN[strategy]:
            web = {release: status for service, release, status in states(engine, app) if service == "web"}
            seen[phase] = (web.get("1.0.0"), web.get("1.1.0"))

    new = release(app, busybox, "1.1.0", web=SERVE.format(word="new"), strategy=strategy, db="db2")
    recorded = Recorded(engine)
    outcome = update(recorded, Journal(tmp_path / "journal.db"), new, window=2, fault=look)

    assert outcome.committed, outcome
    assert outcome.transaction.strategy == strategy
    assert seen == SEEN[strategy]
    assert states(engine, app) == [("db", "1.1.0", "running"), ("web", "1.1.0", "running")]
    assert not set(before.values()) & {c.id for c in containers(engine, app).values()}
    check_commit(recorded.done, strategy, ["db", "web"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_rolls_back_onto_the_very_same_containers(
    engine: DockerEngine, running: tuple[str, dict[str, str]], busybox: str, tmp_path: Path, strategy: str
) -> None:
    app, before = running
    failing = "echo starting; echo boom-marker >&2; exit 3"
    new = release(app, busybox, "1.1.0", web=failing, strategy=strategy, db="db2")
    recorded = Recorded(engine)
    outcome = update(recorded, Journal(tmp_path / "journal.db"), new, window=5)

    assert outcome.status == "failed"
    assert outcome.verdict.service == "web"
    assert "boom-marker" in (outcome.logs or "")  # the failing service's last lines travel with the report
    wait_running(engine, app, 2)
    assert {name: c.id for name, c in containers(engine, app).items()} == before
    check_rollback(recorded.done, ["db", "web"])


def test_hand_over_keeps_the_old_service_answering_throughout(
    engine: DockerEngine, running: tuple[str, dict[str, str]], busybox: str, tmp_path: Path, engine_name: str
) -> None:
    app, _ = running
    if engine_name == "podman":
        # Netavark before 1.9 lets the bridge's MAC change as containers come and go, and names stop resolving
        # until ARP expires: Podman's own fault (docs/agent.md, "Known engine faults"). Docker pins it itself.
        pin_bridge_mac(engine, network_name(app))
    db = containers(engine, app)["db"]
    answers: list[str] = []

    def ask(phase: str) -> None:  # at every phase, something named "web" answers on the app network
        # A client may meet the new container before it listens (the name resolves to both): it asks again.
        for _ in range(3):
            answer = sh(db, "nc -w 5 web 8080")[1].strip()  # generous: a loaded CI machine is slow to switch
            if answer in ("old", "new"):
                break
        answers.append(answer)

    new = release(app, busybox, "1.1.0", web=SERVE.format(word="new"), strategy="hand-over")
    assert update(engine, Journal(tmp_path / "journal.db"), new, window=2, fault=ask).committed
    assert all(answer in ("old", "new") for answer in answers), answers


# --- x-edgefleet probes -------------------------------------------------------------------

HTTPD = "mkdir -p /tmp/www && echo ok > /tmp/www/healthz && exec httpd -f -p 8080 -h /tmp/www"


@pytest.mark.parametrize(
    ("probes", "reason"),
    [
        ('[{http: {port: 8080, path: /healthz}}, {tcp: {port: 8080}}, {exec: ["/bin/true"]}]', None),
        ("[{http: {port: 8080, path: /missing}, retries: 2}]", "http probe :8080/missing reports unhealthy"),
        ("[{tcp: {port: 9}, retries: 2, timeout: 1s}]", "tcp probe :9 reports unhealthy"),
        ('[{exec: ["/bin/false"], retries: 2}]', "exec probe /bin/false reports unhealthy"),
    ],
    ids=["all-pass", "http-404", "tcp-closed", "exec-fails"],
)
def test_probes_judge_the_new_release(
    engine: DockerEngine,
    running: tuple[str, dict[str, str]],
    busybox: str,
    tmp_path: Path,
    probes: str,
    reason: str | None,
) -> None:
    app, before = running
    new = release(app, busybox, "1.1.0", web=HTTPD, probes=probes)
    outcome = update(engine, Journal(tmp_path / "journal.db"), new, window=4)

    if reason is None:
        assert outcome.committed, outcome
    else:
        assert outcome.status == "failed"
        assert outcome.reason == f"web: {reason}"
        wait_running(engine, app, 2)
        assert {name: c.id for name, c in containers(engine, app).items()} == before


def test_too_little_disk_changes_nothing_and_says_so(
    engine: DockerEngine, running: tuple[str, dict[str, str]], busybox: str, tmp_path: Path
) -> None:
    app, before = running
    journal = Journal(tmp_path / "journal.db")
    other = busybox.rsplit("@", 1)[0] + "@sha256:" + "e" * 64  # not present: it would have to be fetched
    new = release(app, other, "1.1.0", web=SERVE.format(word="new"))
    outcome = update(engine, journal, new, image_bytes={other: 1}, updater={"bounds": Bounds(disk_reserve=2**40)})

    assert outcome.status == "no-space"
    assert outcome.transaction is None
    assert "MiB free" in (outcome.reason or "")
    assert journal.last(app) is None
    assert {name: c.id for name, c in containers(engine, app).items()} == before
    assert states(engine, app) == [("db", "1.0.0", "running"), ("web", "1.0.0", "running")]


@pytest.mark.parametrize("late", ["downloading", "probing"])
def test_a_phase_past_its_deadline_rolls_back(
    engine: DockerEngine, running: tuple[str, dict[str, str]], busybox: str, tmp_path: Path, late: str
) -> None:
    """Nothing stays "updating" forever: the clock jumps past the phase's deadline, and the update undoes itself."""
    app, before = running
    journal = Journal(tmp_path / "journal.db")
    skew = [timedelta(0)]

    def jump(phase: str) -> None:
        if phase == late:
            skew[0] = timedelta(
                seconds=DEFAULT_BOUNDS.phase_timeout + 60
            )  # past the phase's deadline (probing: window + margin)

    new = release(app, busybox, "1.1.0", web=SERVE.format(word="new"))
    specs = {s.service: s for s in release_specs(new, facts=HostFacts(), environment={"FLEET": "lab"})}
    updater = Updater(engine, journal, clock=lambda: datetime.now(UTC) + skew[0], sleep=time.sleep, fault=jump)
    outcome = updater.update(app, specs, from_release="1.0.0", to_release="1.1.0", health_window=3, restart_limit=2)
    assert outcome.status == "retry"
    assert f"phase {late} ran past its deadline" in (outcome.reason or "")
    assert outcome.transaction.phase == "rolled-back"
    wait_running(engine, app, 2)
    assert {name: c.id for name, c in containers(engine, app).items()} == before
    assert journal.unfinished() == []


class Flaky:
    """The real engine, except that its next `failures` container removals fail."""

    def __init__(self, engine: DockerEngine, failures: int) -> None:
        self.engine, self.failures = engine, failures

    def execute(self, step: Step, specs: Mapping[tuple[str, str], ContainerSpec]) -> None:
        if isinstance(step, RemoveContainer) and self.failures > 0:
            self.failures -= 1
            raise EngineError(f"cannot remove {step.container_id[:12]}: injected")
        self.engine.execute(step, specs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def test_a_rollback_the_engine_cut_short_is_finished_before_the_next_update(
    engine: DockerEngine, running: tuple[str, dict[str, str]], busybox: str, tmp_path: Path
) -> None:
    app, before = running
    journal = Journal(tmp_path / "journal.db")
    failing = release(app, busybox, "1.1.0", web="exit 3")
    flaky = Flaky(engine, failures=2)  # the rollback fails, and so does the second try at it
    with pytest.raises(EngineError, match="injected"):
        update(cast(DockerEngine, flaky), journal, failing)
    assert [tx.phase for tx in journal.unfinished()] == ["rolling-back"]

    healthy = release(app, busybox, "1.2.0", web=SERVE.format(word="new"))
    assert update(engine, journal, healthy).committed  # the unfinished rollback is completed first
    assert journal.unfinished() == []
    wait_running(engine, app, 2)
    now = containers(engine, app)
    assert now["db"].id == before["db"]
    assert now["web"].labels["io.edgefleet.release"] == "1.2.0"
    assert states(engine, app) == [("db", "1.0.0", "running"), ("web", "1.2.0", "running")]  # nothing else left


def test_old_containers_that_resist_removal_after_commit_do_not_undo_it(
    engine: DockerEngine, running: tuple[str, dict[str, str]], busybox: str, tmp_path: Path
) -> None:
    app, before = running
    journal = Journal(tmp_path / "journal.db")
    new = release(app, busybox, "1.1.0", web=SERVE.format(word="new"), strategy="hand-over")
    outcome = update(cast(DockerEngine, Flaky(engine, failures=1)), journal, new, window=2)
    assert outcome.committed
    assert journal.last(app).phase == "committed"
    assert before["web"] in {c.id for c in docker_client(engine).containers.list(all=True)}  # left for reconcile


def test_the_agent_runs_a_compose_healthcheck_at_its_own_interval(
    engine: DockerEngine, running: tuple[str, dict[str, str]], busybox: str, tmp_path: Path
) -> None:
    """A service healthy after 2 s, checked every 3 s with 2 retries: healthy at the second check, as in
    Compose. Run every second instead, the check would fail twice before the service is up."""
    app, _ = running
    slow = "sleep 2; touch /tmp/up; " + SERVE.format(word="new")
    check = '    healthcheck: {test: ["CMD", "test", "-f", "/tmp/up"], interval: 3s, retries: 2}'
    outcome = update(
        engine, Journal(tmp_path / "journal.db"), release(app, busybox, "1.1.0", web=slow, healthcheck=check), window=6
    )
    assert outcome.committed, outcome.reason
