"""The simulated engine carries out the agent's own update plans: its steps, its order, its rollback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgefleet.agent.engine.memory import MemoryEngine
from edgefleet.agent.journal import Journal
from edgefleet.agent.plan import (
    FetchImage,
    ProbeHealth,
    RecordPhase,
    ServiceTarget,
    StopContainer,
    Strategy,
    UpdatePlan,
    plan_update,
)
from edgefleet.agent.spec import HostFacts, release_specs
from edgefleet.manifest import parse_manifest
from edgefleet.sim.engine import Course, SimEngine, SimRelease, carry_out, course
from edgefleet.sim.errors import EngineStateError
from tests.publishing import IMAGE, compose
from tests.unit.agent import test_transaction as transaction
from tests.update_matrix import check_commit, check_rollback

OTHER = IMAGE.rsplit("@", 1)[0] + "@sha256:" + "e" * 64
STRATEGIES: tuple[Strategy, ...] = ("download-then-kill", "kill-then-download", "hand-over")


def release(
    version: str,
    *services: tuple[str, str, tuple[str, ...]],
    strategy: Strategy = "download-then-kill",
    app: str = "sensor",
) -> SimRelease:
    """A release whose containers' definitions differ where their images do (as `agent.spec` digests them)."""
    targets = tuple(
        ServiceTarget(app, name, version, image, f"{name}-{image[-4:]}", depends) for name, image, depends in services
    )
    return SimRelease(version, int(version.split(".")[1]) + 1, targets, strategy)


OLD = release("1.0.0", ("db", IMAGE, ()), ("web", IMAGE, ("db",)))


async def _no_wait(_seconds: float) -> None:
    return None


def walk(engine: SimEngine, app: str, planned: UpdatePlan, *, failing: str | None = None) -> bool:
    """What `sim.device` does with a plan (`carry_out`), without the waits; True: committed."""
    if failing is not None:
        engine.failing(app, failing)
    how = Course(download=1.0, start=1.0, failing=failing)
    return asyncio.run(carry_out(engine, app, planned, how, sleep=_no_wait))


def test_an_update_is_the_agents_plan_for_the_same_engine_state() -> None:
    engine = SimEngine({"sensor": OLD}, keep_steps=True)
    new = release("1.1.0", ("db", IMAGE, ()), ("web", OTHER, ("db",)), strategy="kill-then-download")
    expected = plan_update(engine.memory.observe(), "sensor", new.services, strategy="kill-then-download")
    planned = engine.begin("sensor", new)
    assert planned == expected
    assert engine.phase("sensor") == "downloading"
    assert walk(engine, "sensor", planned)
    taken = engine.memory.done
    assert taken.index(next(s for s in taken if isinstance(s, StopContainer))) < taken.index(FetchImage(OTHER))
    assert engine.running() == {"sensor": new}
    assert {s: v["release"] for s, v in engine.status()["sensor"].items()} == {"db": "1.0.0", "web": "1.1.0"}
    assert len(engine.memory.state.containers) == 2  # the old web was removed after the commit


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failed_verdict_rolls_back_onto_the_very_same_containers(strategy: Strategy) -> None:
    engine = SimEngine({"sensor": OLD})
    before = engine.memory.state.containers
    new = release("1.1.0", ("db", OTHER, ()), ("web", OTHER, ("db",)), strategy=strategy)
    planned = engine.begin("sensor", new)
    assert not walk(engine, "sensor", planned, failing="web")
    assert engine.memory.state.containers == before
    assert engine.running() == {"sensor": OLD}
    assert not engine.updating()


def test_while_the_new_release_is_checked_its_services_are_shown_starting_or_exited() -> None:
    engine = SimEngine({"sensor": OLD})
    new = release("1.1.0", ("db", OTHER, ()), ("web", OTHER, ("db",)), strategy="hand-over")
    planned = engine.begin("sensor", new)
    engine.failing("sensor", "web")
    for step in planned.steps:
        if isinstance(step, ProbeHealth):
            break
        if isinstance(step, RecordPhase):
            engine.record("sensor", step)
        else:
            engine.execute("sensor", step)
    status = engine.status()["sensor"]
    assert (status["db"]["release"], status["db"]["health"]) == ("1.1.0", "starting")
    assert (status["web"]["release"], status["web"]["state"]) == ("1.1.0", "exited")


def test_a_failed_first_install_leaves_nothing_running() -> None:
    engine = SimEngine()
    planned = engine.begin("sensor", OLD)
    assert not walk(engine, "sensor", planned, failing="db")
    assert engine.running() == {}
    assert engine.status() == {}


def test_one_update_at_a_time_and_no_bookkeeping_without_one() -> None:
    engine = SimEngine({"sensor": OLD})
    with pytest.raises(EngineStateError, match="running, not updating"):
        engine.commit("sensor")
    engine.begin("sensor", OLD)
    with pytest.raises(EngineStateError, match="downloading, not running"):
        engine.begin("sensor", OLD)
    engine.remove("sensor")  # not while it updates
    assert engine.phase("sensor") == "downloading"


def test_an_app_no_longer_assigned_loses_its_containers_and_network() -> None:
    engine = SimEngine({"sensor": OLD, "other": release("1.0.0", ("main", IMAGE, ()), app="other")})
    engine.remove("sensor")
    assert set(engine.running()) == {"other"}
    assert {c.app for c in engine.memory.state.containers} == {"other"}
    assert engine.memory.state.networks == {"other"}


def test_a_release_is_made_from_the_agents_container_specs() -> None:
    manifest = parse_manifest(compose("sensor", "1.2.0").encode(), source="test")
    specs = release_specs(manifest, facts=HostFacts())
    made = SimRelease.of(specs, version="1.2.0", release_counter=3, strategy="hand-over", volumes=())
    assert made.services == tuple(spec.target() for spec in specs)
    assert (made.names, made.strategy) == (("main",), "hand-over")


def test_the_course_of_an_update_is_fixed_by_the_seed() -> None:
    args = {"device": 7, "app": "sensor", "mark": "2-1.1.0", "services": ("main", "sidecar"), "download": 4.0}
    first = course(11, fail_rate=0.5, start=2.0, **args)  # type: ignore[arg-type]
    assert course(11, fail_rate=0.5, start=2.0, **args) == first  # type: ignore[arg-type]
    assert 2.0 <= first.download < 6.0
    assert 1.0 <= first.start < 3.0
    always = course(11, fail_rate=1.0, start=2.0, **args)  # type: ignore[arg-type]
    assert always.fails
    assert always.failing in ("main", "sidecar")
    assert not course(11, fail_rate=0.0, start=2.0, **args).fails  # type: ignore[arg-type]


def test_a_course_without_failure_names_no_service() -> None:
    assert Course(download=1.0, start=1.0, failing=None).fails is False


# --- the agent's strategy and rollback matrix, on the simulator --------------------------------


@pytest.mark.parametrize("fails", [False, True], ids=["healthy", "failing"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_simulator_takes_the_very_steps_the_agents_transaction_takes(
    tmp_path: Path, strategy: Strategy, fails: bool
) -> None:
    """`Updater` and `sim.engine.carry_out` on the same engine state: the same steps, in order, to the same end."""
    failing = frozenset({"new-web"} if fails else ())
    agent = MemoryEngine(transaction.old_release(), failing=failing)
    outcome = transaction.update(agent, Journal(tmp_path / "journal.db"), strategy)
    assert outcome.status == ("failed" if fails else "committed")

    sim = SimEngine(keep_steps=True)
    sim.memory = MemoryEngine(transaction.old_release())
    specs = transaction.new_specs().values()
    new = SimRelease.of(specs, version="2.0.0", release_counter=2, strategy=strategy, volumes=("data",))
    planned = sim.begin(transaction.APP, new)
    if fails:
        sim.failing(transaction.APP, "web")
    how = Course(download=1.0, start=3.0, failing="web" if fails else None)
    committed = asyncio.run(carry_out(sim, transaction.APP, planned, how, sleep=_no_wait))

    assert committed is not fails
    assert sim.memory.done == agent.done
    assert sim.memory.state == agent.state
    if fails:
        check_rollback(sim.memory.done, transaction.ORDER)
    else:
        check_commit(sim.memory.done, strategy, transaction.ORDER)


def test_a_simulation_keeps_no_record_of_its_steps() -> None:
    engine = SimEngine({"sensor": OLD})
    planned = engine.begin("sensor", release("1.1.0", ("db", OTHER, ()), ("web", OTHER, ("db",))))
    assert walk(engine, "sensor", planned)
    assert engine.memory.done == []  # thousands of devices, many updates: nothing grows
