"""One app's update as a transaction: stage the new release beside the old one, switch, probe, commit or roll back.

Strategy download-then-kill (the default): every image is fetched before anything stops.
The journal records each phase before its effect (`agent.journal`):

- ``downloading``: fetch the new images (pull by digest, or load verified archives);
- ``staged``: create the changed services' new containers, not started; the old ones
  they replace are named in the journal;
- ``switching``: stop the old containers (kept, not removed), start the new ones;
- ``probing``: watch the new services for the release's health window (`agent.health`);
- ``committed``: remove the old containers; or ``rolling-back``: remove the new ones
  and start the old ones again, then ``rolled-back``.

Unchanged services keep running throughout. `recover` rolls back whatever a crash or
power loss interrupted (the previous release is known good), so the device ends on
exactly its old release or its new one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from edgefleet.agent.errors import EngineError
from edgefleet.agent.health import ServiceHealth, Verdict, verdict
from edgefleet.agent.journal import Journal, Phase, Transaction
from edgefleet.agent.plan import (
    CreateContainer,
    CreateNetwork,
    CreateVolume,
    FetchImage,
    Observed,
    RemoveContainer,
    StartContainer,
    Step,
    StopContainer,
    dependency_order,
)
from edgefleet.agent.spec import ContainerSpec, Health

log = logging.getLogger(__name__)
PHASE_TIMEOUT = timedelta(minutes=30)
PROBE_MARGIN = timedelta(minutes=5)
PROBE_INTERVAL = 1.0

FaultHook = Callable[[str], None]
"""Called with each phase name just after it is journaled (tests abort there to simulate a crash)."""


class TransactionEngine(Protocol):
    """What a transaction needs from the engine (`agent.engine.docker.DockerEngine`)."""

    def observe(self, images: frozenset[str] = frozenset()) -> Observed: ...

    def execute(self, step: Step, specs: Mapping[tuple[str, str], ContainerSpec]) -> None: ...

    def ids(self, app: str) -> dict[tuple[str, str], str]: ...

    def health(self, container_id: str) -> ServiceHealth: ...

    def probe(self, container_id: str, argv: tuple[str, ...], *, timeout: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class Change:
    """What an update does to one app's containers (pure result of `plan_change`)."""

    create: tuple[ContainerSpec, ...]
    """New containers: services whose definition changed, or that are new."""
    retire: tuple[tuple[str, str], ...]
    """(service, container id) of running containers the new release replaces or drops."""
    fetch: tuple[str, ...]
    networks: bool
    volumes: tuple[str, ...]


def plan_change(observed: Observed, app: str, specs: Mapping[str, ContainerSpec], volumes: tuple[str, ...]) -> Change:
    """Which containers to create, which to retire, which images to fetch (pure)."""
    mine = [c for c in observed.containers if c.app == app]
    create: list[ContainerSpec] = []
    retire: list[tuple[str, str]] = []
    for name, spec in sorted(specs.items()):
        current = [c for c in mine if c.service == name]
        if any(c.config_digest == spec.config_digest for c in current):
            continue
        create.append(spec)
        retire.extend((name, c.id) for c in current if c.running)
    retire.extend((c.service, c.id) for c in mine if c.service not in specs and c.running)
    return Change(
        create=tuple(create),
        retire=tuple(sorted(set(retire))),
        fetch=tuple(sorted({s.image for s in create} - observed.images)),
        networks=app not in observed.networks,
        volumes=tuple(v for v in volumes if (app, v) not in observed.volumes),
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    committed: bool
    transaction: Transaction
    verdict: Verdict | None
    retryable: bool = False
    """The update could not be carried out (engine or disk trouble), not judged: try again later."""


class Updater:
    """Runs update transactions for one engine and journal; one at a time."""

    def __init__(
        self,
        engine: TransactionEngine,
        journal: Journal,
        *,
        clock: Callable[[], datetime],
        sleep: Callable[[float], None] = time.sleep,
        fault: FaultHook | None = None,
    ) -> None:
        self._engine = engine
        self._journal = journal
        self._clock = clock
        self._sleep = sleep
        self._fault = fault or (lambda _phase: None)

    def _advance(self, tx: Transaction, phase: Phase, detail: dict[str, Any] | None = None) -> Transaction:
        advanced = self._journal.advance(tx, phase, timeout=PHASE_TIMEOUT, detail=detail)
        self._fault(phase)
        return advanced

    def update(
        self,
        app: str,
        specs: Mapping[str, ContainerSpec],
        *,
        from_release: str | None,
        to_release: str,
        volumes: tuple[str, ...] = (),
        health_window: float,
        restart_limit: int,
    ) -> Outcome:
        """Move `app` to the release whose containers are `specs` (service -> spec), or back on failure.

        An engine or disk failure on the way rolls back too, with a retryable outcome.
        """
        tx = self._journal.begin(
            app, from_release=from_release, to_release=to_release, strategy="download-then-kill", timeout=PHASE_TIMEOUT
        )
        try:
            return self._carry_out(tx, app, specs, volumes, health_window=health_window, restart_limit=restart_limit)
        except (EngineError, OSError, RuntimeError) as exc:
            log.error("%s: update to %s could not be carried out: %s", app, to_release, exc)
            current = self._journal.get(tx.id)
            return Outcome(
                False, self.rollback(current, f"could not be carried out: {exc}"[:500]), None, retryable=True
            )

    def _carry_out(
        self,
        tx: Transaction,
        app: str,
        specs: Mapping[str, ContainerSpec],
        volumes: tuple[str, ...],
        *,
        health_window: float,
        restart_limit: int,
    ) -> Outcome:
        keyed = {(app, name): spec for name, spec in specs.items()}
        self._fault("verified")
        tx = self._advance(tx, "downloading")
        change = plan_change(self._engine.observe(frozenset(s.image for s in specs.values())), app, specs, volumes)
        for image in change.fetch:
            self._engine.execute(FetchImage(image), keyed)
        tx = self._advance(tx, "downloaded")
        tx = self._advance(
            tx,
            "staged",
            detail={
                "new": {spec.service: spec.config_digest for spec in change.create},
                "old": dict(change.retire),
            },
        )
        if change.networks:
            self._engine.execute(CreateNetwork(app), keyed)
        for volume in change.volumes:
            self._engine.execute(CreateVolume(app, volume), keyed)
        for spec in change.create:
            self._engine.execute(CreateContainer(spec.target()), keyed)
        tx = self._advance(tx, "switching")
        for service, container_id in reversed(change.retire):
            self._engine.execute(StopContainer(app, service, container_id), keyed)
        staged = self._engine.ids(app)
        created = {spec.service for spec in change.create}
        for spec in dependency_order(specs.values()):
            if spec.service not in created:
                continue
            new_id = staged.get((spec.service, spec.config_digest))
            if new_id is None:
                raise RuntimeError(f"{app}/{spec.service}: staged container is gone")
            self._engine.execute(StartContainer(app, spec.service, new_id), keyed)
        tx = self._advance(tx, "probing")
        result = self._probe(app, specs, health_window=health_window, restart_limit=restart_limit)
        if result.outcome != "healthy":
            reason = f"{result.service}: {result.reason}"
            return Outcome(False, self.rollback(tx, reason), result)
        tx = self._advance(tx, "committed")
        for service, container_id in change.retire:
            self._engine.execute(RemoveContainer(app, service, container_id), keyed)
        return Outcome(True, tx, result)

    def _probe(
        self, app: str, specs: Mapping[str, ContainerSpec], *, health_window: float, restart_limit: int
    ) -> Verdict:
        started = self._clock()
        ends = started + timedelta(seconds=health_window)
        checks: dict[str, _Check] = {}
        while True:
            now = self._clock()
            ids = self._engine.ids(app)  # one listing per round, whatever the number of services
            states = []
            for spec in specs.values():
                state = self._service_health(ids.get((spec.service, spec.config_digest)), spec, checks, now - started)
                if state is None:
                    return Verdict("failed", spec.service, "its container is gone")
                states.append(state)
            result = verdict(states, restart_limit=restart_limit, window_over=now >= ends)
            if result.outcome != "pending":
                return result
            self._sleep(PROBE_INTERVAL)

    def _service_health(
        self, container_id: str | None, spec: ContainerSpec, checks: dict[str, _Check], elapsed: timedelta
    ) -> ServiceHealth | None:
        """The engine's view of the service, with its healthcheck run by the agent when the engine does not."""
        if container_id is None:
            return None
        state = self._engine.health(container_id)
        health = spec.health
        if health is None or state.state != "running" or state.health in ("healthy", "unhealthy"):
            return state
        passed = self._engine.probe(container_id, _probe_argv(health.test), timeout=health.timeout)
        check = checks.setdefault(spec.service, _Check())
        return replace(state, health=check.record(passed, health, elapsed))

    def rollback(self, tx: Transaction, reason: str) -> Transaction:
        """Remove the new containers, start the old ones again; journaled before and after."""
        if tx.phase != "rolling-back":
            tx = self._journal.advance(tx, "rolling-back", timeout=PHASE_TIMEOUT, error=reason)
        self._fault("rolling-back")
        new: dict[str, str] = tx.detail.get("new", {})
        old: dict[str, str] = tx.detail.get("old", {})
        none: Mapping[tuple[str, str], ContainerSpec] = {}
        ids = self._engine.ids(tx.app)
        for service, digest in sorted(new.items()):
            container_id = ids.get((service, digest))
            if container_id is not None:
                self._engine.execute(RemoveContainer(tx.app, service, container_id), none)
        for service, container_id in sorted(old.items()):
            try:
                self._engine.execute(StartContainer(tx.app, service, container_id), none)
            except EngineError as exc:  # keep starting the others; the next reconcile repairs the rest
                log.error("rollback: cannot start %s/%s: %s", tx.app, service, exc)
        log.warning("%s: rolled back %s -> %s: %s", tx.app, tx.to_release, tx.from_release, reason)
        return self._journal.advance(tx, "rolled-back")

    def recover(self) -> list[Transaction]:
        """Roll back every transaction a crash interrupted; call before anything else at start."""
        return [self.rollback(tx, tx.error or f"interrupted while {tx.phase}") for tx in self._journal.unfinished()]


@dataclass
class _Check:
    """A healthcheck the agent runs itself: healthy after a pass, unhealthy after `retries` failures in a row."""

    failures: int = 0
    passed: bool = False

    def record(self, ok: bool, health: Health, elapsed: timedelta) -> str:
        if ok:
            self.passed, self.failures = True, 0
            return "healthy"
        if elapsed.total_seconds() >= health.start_period:
            self.failures += 1
        return "unhealthy" if self.failures >= health.retries else "starting"


def _probe_argv(test: tuple[str, ...]) -> tuple[str, ...]:
    """Compose `test` (["CMD", ...] or ["CMD-SHELL", "..."]) as an argv."""
    if test and test[0] == "CMD-SHELL":
        return ("/bin/sh", "-c", " ".join(test[1:]))
    if test and test[0] == "CMD":
        return test[1:]
    return test
