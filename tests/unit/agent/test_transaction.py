"""The update transaction above an in-memory engine: every strategy and its rollback, step by step.

Each strategy x (healthy | failing) runs through `Updater` on `agent.engine.memory.MemoryEngine`
and is checked for where the device ends, the order of the engine's steps (stops in reverse
`depends_on` order, starts in `depends_on` order, the old release stopped at the strategy's own
moment) and the journal; then a crash at every journaled phase is recovered onto the old release.
The same scenarios run on Podman and Docker Engine in tests/integration/agent/test_transaction.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgefleet.agent.bounds import Bounds
from edgefleet.agent.engine.memory import MemoryEngine
from edgefleet.agent.journal import FORWARD, Journal
from edgefleet.agent.plan import (
    Observed,
    ObservedContainer,
    StartContainer,
    StopContainer,
    Strategy,
)
from edgefleet.agent.spec import ContainerSpec
from edgefleet.agent.transaction import FaultHook, Outcome, Updater
from tests.update_matrix import STRATEGIES, bare_spec, check_commit, check_rollback, services

APP = "plant"
OLD, NEW = "sha256:old", "sha256:new"
DEPENDS = {"db": (), "api": ("db",), "web": ("api",)}
ORDER = ["db", "api", "web"]
"""web depends on api, api on db: starts go db, api, web; stops web, api, db."""


def spec(service: str, digest: str, image: str) -> ContainerSpec:
    release = "2.0.0" if digest.startswith("new") else "1.0.0"
    return bare_spec(
        app=APP, service=service, release=release, image=image, depends_on=DEPENDS[service], config_digest=digest
    )


def old_release() -> Observed:
    """The device runs 1.0.0: every service's container running, its image present."""
    return Observed(
        containers=tuple(ObservedContainer(f"old-{s}", APP, s, "1.0.0", f"old-{s}", True) for s in sorted(DEPENDS)),
        networks=frozenset({APP}),
        volumes=frozenset({(APP, "data")}),
        images=frozenset({OLD}),
    )


def new_specs(*, unchanged: tuple[str, ...] = ()) -> dict[str, ContainerSpec]:
    """2.0.0: every service's definition changed (but `unchanged`), on a new image."""
    return {s: spec(s, f"old-{s}", OLD) if s in unchanged else spec(s, f"new-{s}", NEW) for s in sorted(DEPENDS)}


class Clock:
    """Wall time that moves only when the transaction sleeps."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def update(
    engine: MemoryEngine,
    journal: Journal,
    strategy: Strategy,
    *,
    fault: FaultHook | None = None,
    unchanged: tuple[str, ...] = (),
) -> Outcome:
    clock = Clock()
    updater = Updater(engine, journal, clock=clock, sleep=clock.sleep, fault=fault)
    return updater.update(
        APP,
        new_specs(unchanged=unchanged),
        from_release="1.0.0",
        to_release="2.0.0",
        volumes=("data",),
        health_window=3,
        restart_limit=0,
        strategy=strategy,
    )


def running(engine: MemoryEngine) -> dict[str, str]:
    """service -> id of every container of the app; all of them must be running."""
    found = [c for c in engine.state.containers if c.app == APP]
    assert all(c.running for c in found), found
    return {c.service: c.id for c in found}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_healthy_release_commits_with_each_strategys_order_of_steps(tmp_path: Path, strategy: Strategy) -> None:
    engine = MemoryEngine(old_release())
    outcome = update(engine, Journal(tmp_path / "journal.db"), strategy)

    assert outcome.status == "committed"
    assert outcome.transaction is not None
    assert outcome.transaction.outcome == "committed"
    now = running(engine)
    assert sorted(now) == ["api", "db", "web"]
    assert not any(cid.startswith("old-") for cid in now.values())
    check_commit(engine.done, strategy, ORDER)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failing_release_rolls_back_onto_the_very_same_containers(tmp_path: Path, strategy: Strategy) -> None:
    engine = MemoryEngine(old_release(), failing=frozenset({"new-web"}))
    before = running(engine)
    outcome = update(engine, Journal(tmp_path / "journal.db"), strategy)

    assert outcome.status == "failed"
    assert outcome.verdict is not None
    assert outcome.verdict.service == "web"
    tx = outcome.transaction
    assert tx is not None
    assert (tx.phase, tx.outcome, tx.detail["service"]) == ("rolled-back", "failed", "web")
    assert running(engine) == before  # exactly the old containers, running again
    check_rollback(engine.done, ORDER)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_unchanged_service_keeps_running_throughout(tmp_path: Path, strategy: Strategy) -> None:
    engine = MemoryEngine(old_release())
    outcome = update(engine, Journal(tmp_path / "journal.db"), strategy, unchanged=("db",))
    assert outcome.status == "committed"
    assert running(engine)["db"] == "old-db"
    assert "db" not in services(engine.done, StopContainer) + services(engine.done, StartContainer)
    check_commit(engine.done, strategy, ["api", "web"])


class Crash(BaseException):
    """The agent's process ending at a journaled phase."""


CRASHES = [(strategy, phase) for strategy in STRATEGIES for phase in (*FORWARD[:-1], "rolling-back")]


@pytest.mark.parametrize(("strategy", "phase"), CRASHES, ids=[f"{s}-{p}" for s, p in CRASHES])
def test_a_crash_at_any_phase_is_recovered_onto_the_old_release(tmp_path: Path, strategy: Strategy, phase: str) -> None:
    engine = MemoryEngine(old_release(), failing=frozenset({"new-web"} if phase == "rolling-back" else ()))
    before = running(engine)
    journal = Journal(tmp_path / "journal.db")

    def crash(reached: str) -> None:
        if reached == phase:
            raise Crash

    with pytest.raises(Crash):
        update(engine, journal, strategy, fault=crash)
    engine.state = replace(engine.state)  # nothing of the process survives but the engine and the journal
    (recovered,) = Updater(engine, Journal(tmp_path / "journal.db"), clock=Clock()).recover()

    assert running(engine) == before
    assert recovered.phase == "rolled-back"
    # A release judged failed stays failed; anything else was interrupted, in the phase it was in.
    assert recovered.outcome == ("failed" if phase == "rolling-back" else "interrupted")
    assert recovered.detail["interrupted_in"] == phase


class Chatty(MemoryEngine):
    """A failing service that wrote a screenful of emoji: 8192 characters, 98 KB as JSON."""

    def logs(self, container_id: str) -> str:
        return "\U0001f525" * 10_000


def test_a_failing_services_long_log_still_leaves_its_transaction_failed(tmp_path: Path) -> None:
    engine = Chatty(old_release(), failing=frozenset({"new-web"}))
    clock = Clock()
    bounds = Bounds(journal_detail_bytes=16 * 1024)
    updater = Updater(
        engine, Journal(tmp_path / "journal.db", bounds=bounds), clock=clock, sleep=clock.sleep, bounds=bounds
    )
    outcome = updater.update(
        APP,
        new_specs(),
        from_release="1.0.0",
        to_release="2.0.0",
        health_window=3,
        restart_limit=0,
        strategy="hand-over",
    )
    tx = outcome.transaction
    assert tx is not None
    assert (outcome.status, tx.phase, tx.outcome) == ("failed", "rolled-back", "failed")
    assert 0 < len(json.dumps(tx.detail["logs"])) <= 8 * 1024  # the newest lines, what the journal holds
    assert tx.detail["logs"].endswith("\U0001f525")
