"""One app's update as a transaction: stage the new release beside the old one, switch, probe, commit or roll back.

What to do is decided by `agent.plan.plan_update` (pure: the steps, the journaled phases
between them, the probe, the commit) and `plan_rollback`; this module executes those
steps, each phase journaled before its effect (`agent.journal`). The release's update
strategy decides when the old containers stop:

- ``download-then-kill`` (default): fetch every image, create the new containers (not
  started), then stop the old ones (kept, not removed) and start the new ones;
- ``kill-then-download``: stop the old containers first (frees memory and CPU for the
  download on a small device), then fetch, create and start; the old containers and their
  images are kept, so it still rolls back without the network;
- ``hand-over``: start the new containers while the old ones keep running; the old ones
  stop only once the new release is healthy (about zero downtime; no published host ports).

Then ``probing`` watches the new services for the release's health window (engine state,
Compose healthchecks and x-edgefleet probes, `agent.health`); ``committed`` removes the
old containers; a failure goes ``rolling-back`` (remove the new containers, start the old
ones again) and ``rolled-back``, and keeps the tail of the failing service's logs.

Before anything changes, the free space of the engine's storage is checked against what
the new images need plus a reserve; a shortage changes nothing and has its own status.
Unchanged services keep running throughout. `recover` rolls back whatever a crash or
power loss interrupted (the previous release is known good), so the device ends on
exactly its old release or its new one. How each transaction ended is journaled with it
(`Transaction.outcome`) before anything is undone: a release judged unhealthy stays failed
even if the agent dies while rolling it back.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.errors import EngineError, NoSpaceError, OverdueError
from edgefleet.agent.health import ServiceHealth, Verdict, verdict
from edgefleet.agent.journal import INTERRUPTED, Ending, Journal, JournalError, Phase, Transaction
from edgefleet.agent.plan import (
    Observed,
    ProbeHealth,
    RecordPhase,
    StartContainer,
    Step,
    Strategy,
    UpdatePlan,
    plan_rollback,
    plan_update,
)
from edgefleet.agent.probes import http_ok, tcp_ok
from edgefleet.agent.spec import ContainerSpec, Probe
from edgefleet.protocol import MAX_LOGS_CHARS

log = logging.getLogger(__name__)
Status = Literal["committed", "failed", "retry", "no-space"]

FaultHook = Callable[[str], None]
"""Called with each phase name just after it is journaled, and with ``settling`` between a finished
transaction's bookkeeping and its settled mark (`agent.runner`): tests abort there to simulate a crash."""


class TransactionEngine(Protocol):
    """What a transaction needs from the engine (`agent.engine.docker.DockerEngine`)."""

    def observe(self, images: frozenset[str] = frozenset()) -> Observed: ...

    def execute(self, step: Step, specs: Mapping[tuple[str, str], ContainerSpec]) -> None: ...

    def ids(self, app: str) -> dict[tuple[str, str], str]: ...

    def health(self, container_id: str) -> ServiceHealth: ...

    def probe(self, container_id: str, argv: tuple[str, ...], *, timeout: float) -> bool: ...

    def address(self, container_id: str, app: str) -> str | None: ...

    def logs(self, container_id: str) -> str: ...

    def storage_free(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an update ended.

    committed; failed (rolled back, not to be retried); retry (could not be carried out:
    engine or disk trouble, rolled back); no-space (nothing was changed).
    """

    status: Status
    transaction: Transaction | None
    verdict: Verdict | None = None
    reason: str | None = None
    logs: str | None = None
    """The tail of the failing service's logs."""

    @property
    def committed(self) -> bool:
        return self.status == "committed"


def space_needed(fetch: tuple[str, ...], image_bytes: Mapping[str, int]) -> int:
    """Bytes the images to fetch will take: twice their signed size (archive and unpacked); unknown ones count 0."""
    return sum(2 * image_bytes.get(image, 0) for image in fetch)


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
        bounds: Bounds = DEFAULT_BOUNDS,
    ) -> None:
        """`bounds`: each phase's deadline, the probe's margin and interval, the free disk kept (`agent.bounds`)."""
        self._engine = engine
        self._journal = journal
        self._clock = clock
        self._sleep = sleep
        self._fault = fault or (lambda _phase: None)
        self._bounds = bounds
        self._phase_timeout = timedelta(seconds=bounds.phase_timeout)

    def _advance(
        self, tx: Transaction, phase: Phase, detail: dict[str, Any] | None = None, timeout: timedelta | None = None
    ) -> Transaction:
        advanced = self._journal.advance(tx, phase, timeout=timeout or self._phase_timeout, detail=detail)
        self._fault(phase)
        return advanced

    def _on_time(self, tx: Transaction) -> None:
        """Checked between steps: a phase past its deadline rolls the transaction back."""
        if tx.overdue(self._clock()):
            raise OverdueError(f"phase {tx.phase} ran past its deadline")

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
        strategy: Strategy = "download-then-kill",
        image_bytes: Mapping[str, int] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Outcome:
        """Move `app` to the release whose containers are `specs` (service -> spec), or back on failure.

        `detail` is kept with the transaction for the caller to settle it (`Journal.begin`).

        `image_bytes` gives the signed size of images known in advance (bundled archives),
        for the free-space check. An engine or disk failure on the way rolls back too, with
        the status ``retry``.
        """
        try:
            self.finish_rollbacks(app)
            observed = self._engine.observe(frozenset(s.image for s in specs.values()))
            planned = plan_update(
                observed, app, [spec.target() for spec in specs.values()], volumes=volumes, strategy=strategy
            )
            self._check_space(planned.fetch, image_bytes or {})
        except NoSpaceError as exc:
            log.error("%s: not updating to %s: %s", app, to_release, exc)
            return Outcome("no-space", None, reason=str(exc))
        except EngineError as exc:
            return Outcome("retry", None, reason=f"could not be carried out: {exc}"[:500])
        tx = self._journal.begin(
            app,
            from_release=from_release,
            to_release=to_release,
            strategy=strategy,
            timeout=self._phase_timeout,
            detail=detail,
        )
        try:
            return self._carry_out(tx, planned, specs, health_window=health_window, restart_limit=restart_limit)
        except (EngineError, JournalError, OSError, RuntimeError) as exc:
            log.error("%s: update to %s could not be carried out: %s", app, to_release, exc)
            reason = f"could not be carried out: {exc}"[:500]
            try:
                tx = self._journal.get(tx.id)  # with the detail of the last phase recorded
            except (JournalError, sqlite3.Error) as unreadable:
                log.error("%s: %s", app, unreadable)
            return Outcome("retry", self.rollback(tx, reason, outcome="retry"), reason=reason)

    def finish_rollbacks(self, app: str | None = None) -> list[Transaction]:
        """Finish the rollbacks an engine error cut short (of `app`, or of every app); each keeps its outcome.

        Raises:
            EngineError: the engine still refuses; the transaction stays unfinished.
        """
        return [
            self.rollback(stale, stale.error or f"left unfinished while {stale.phase}", outcome="retry")
            for stale in self._journal.unfinished()
            if app is None or stale.app == app
        ]

    def _check_space(self, fetch: tuple[str, ...], image_bytes: Mapping[str, int]) -> None:
        if not fetch:
            return
        free = self._engine.storage_free()
        needed = space_needed(fetch, image_bytes) + self._bounds.disk_reserve
        if free is not None and free < needed:
            raise NoSpaceError(
                f"{free // 2**20} MiB free where the new images and the reserve need {needed // 2**20} MiB"
            )

    def _carry_out(
        self,
        tx: Transaction,
        planned: UpdatePlan,
        specs: Mapping[str, ContainerSpec],
        *,
        health_window: float,
        restart_limit: int,
    ) -> Outcome:
        """Execute the plan's steps in order: phases are journaled, the probe judges, the rest goes to the engine."""
        app = tx.app
        keyed = {(app, name): spec for name, spec in specs.items()}
        window = timedelta(seconds=health_window + self._bounds.probe_margin)
        result: Verdict | None = None
        self._fault("verified")
        for step in planned.steps:
            match step:
                case RecordPhase(phase=phase, detail=detail):
                    if phase != "committed":  # a healthy verdict commits (the probe kept its own deadline)
                        self._on_time(tx)
                    timeout = window if phase == "probing" else self._phase_timeout
                    tx = self._advance(tx, phase, detail=detail, timeout=timeout)
                case ProbeHealth():
                    result = self._probe(tx, specs, health_window=health_window, restart_limit=restart_limit)
                    if result.outcome != "healthy":
                        reason = f"{result.service}: {result.reason}"
                        logs = self._logs(app, specs, result.service)
                        kept = (
                            None
                            if logs is None
                            else _fit(logs[-MAX_LOGS_CHARS:], self._bounds.journal_detail_bytes // 2)
                        )
                        judged = {"service": result.service, "logs": kept}
                        rolled_back = self.rollback(tx, reason, outcome="failed", detail=judged)
                        return Outcome("failed", rolled_back, result, reason, logs)
                case _ if tx.phase == "committed":  # hand-over: the old ones are still running until here
                    try:
                        self._engine.execute(step, keyed)
                    except EngineError as exc:  # committed is committed: the next reconcile removes what is left
                        log.error("%s: old container left after commit: %s", app, exc)
                case _:
                    self._on_time(tx)
                    self._engine.execute(step, keyed)
        return Outcome("committed", tx, result)

    def _logs(self, app: str, specs: Mapping[str, ContainerSpec], service: str | None) -> str | None:
        """The failing service's last log lines, read before rollback removes its container."""
        spec = specs.get(service or "")
        container_id = self._engine.ids(app).get((spec.service, spec.config_digest)) if spec else None
        if container_id is None:
            return None
        try:
            return self._engine.logs(container_id)
        except EngineError as exc:
            return f"(logs unavailable: {exc.message})"[:200]

    def _probe(
        self, tx: Transaction, specs: Mapping[str, ContainerSpec], *, health_window: float, restart_limit: int
    ) -> Verdict:
        app = tx.app
        started = self._clock()
        ends = started + timedelta(seconds=health_window)
        checks: dict[tuple[str, int], _Check] = {}
        addresses: dict[str, str | None] = {}
        restarts: dict[str, int] = {}  # at the previous look; the new containers start at 0
        while True:
            self._on_time(tx)
            now = self._clock()
            ids = self._engine.ids(app)  # one listing per round, whatever the number of services
            states = []
            for spec in specs.values():
                container_id = ids.get((spec.service, spec.config_digest))
                if container_id is None:
                    return Verdict("failed", spec.service, "its container is gone")
                state = self._service_health(app, container_id, spec, checks, addresses, now - started)
                states.append(replace(state, settled=state.restarts == restarts.get(spec.service, 0)))
                restarts[spec.service] = state.restarts
            result = verdict(states, restart_limit=restart_limit, window_over=now >= ends)
            if result.outcome != "pending":
                return result
            self._sleep(self._bounds.probe_interval)

    def _service_health(
        self,
        app: str,
        container_id: str,
        spec: ContainerSpec,
        checks: dict[tuple[str, int], _Check],
        addresses: dict[str, str | None],
        elapsed: timedelta,
    ) -> ServiceHealth:
        """The engine's view of the service, joined with its healthcheck and x-edgefleet probes.

        The agent runs the healthcheck itself when the engine does not; the service is
        healthy when all of them are.
        """
        state = self._engine.health(container_id)
        if state.state != "running" or (spec.health is None and not spec.probes):
            return state
        results: list[tuple[str, str | None]] = []
        health = spec.health
        if health is not None:
            if state.health in ("healthy", "unhealthy"):
                results.append((state.health, None))
            else:
                check = checks.setdefault((spec.service, 0), _Check())
                if check.due(elapsed):
                    passed = self._engine.probe(container_id, _probe_argv(health.test), timeout=health.timeout)
                    check.record(passed, health.retries, health.start_period, elapsed, interval=health.interval)
                results.append((check.status, None))
        for index, probe in enumerate(spec.probes, start=1):
            if container_id not in addresses and probe.kind != "exec":
                addresses[container_id] = self._engine.address(container_id, app)
            passed = self._run_probe(container_id, addresses.get(container_id), probe)
            check = checks.setdefault((spec.service, index), _Check())
            results.append((check.record(passed, probe.retries, probe.start_period, elapsed), probe.describe()))
        failing = next((what for status, what in results if status == "unhealthy"), "")
        if any(status == "unhealthy" for status, _ in results):
            return replace(state, health="unhealthy", failing=failing)
        combined = "healthy" if all(status == "healthy" for status, _ in results) else "starting"
        return replace(state, health=combined)

    def _run_probe(self, container_id: str, address: str | None, probe: Probe) -> bool:
        if probe.kind == "exec":
            return self._engine.probe(container_id, probe.argv, timeout=probe.timeout)
        if address is None:
            return False
        if probe.kind == "http":
            return http_ok(
                address, probe.port, probe.path, timeout=probe.timeout, limit=self._bounds.probe_answer_bytes
            )
        return tcp_ok(address, probe.port, timeout=probe.timeout)

    def rollback(
        self, tx: Transaction, reason: str, *, outcome: Ending, detail: dict[str, Any] | None = None
    ) -> Transaction:
        """Remove the new containers, start the old ones again; journaled before and after.

        `outcome` (with `detail`) is journaled with the ``rolling-back`` phase, before any
        effect. A transaction already rolling back keeps the outcome it has: one judged
        failed stays failed when a crash cut its rollback short.

        The engine side is done even when the journal cannot be written (a full disk): the
        old release running matters more than the record, which recovery completes later.
        An engine error stops the rollback where it is; the transaction stays unfinished and
        is rolled back again before the app's next update, or at the next start.
        """
        finish: dict[str, Any] = {}
        if tx.phase != "rolling-back":
            noted = {"outcome": outcome, **(detail or {})}
            if outcome == "interrupted":
                noted["interrupted_in"] = tx.phase
            try:
                tx = self._journal.advance(tx, "rolling-back", timeout=self._phase_timeout, error=reason, detail=noted)
            except JournalError as exc:
                log.error("rollback of %s: %s", tx.app, exc)
        elif outcome == "interrupted":  # its rollback was cut short: say so, keep how it was judged
            finish = {"interrupted_in": "rolling-back", "outcome": tx.detail.get("outcome", "interrupted")}
        self._fault("rolling-back")
        none: Mapping[tuple[str, str], ContainerSpec] = {}
        for step in plan_rollback(tx.app, tx.detail, self._engine.ids(tx.app)):
            try:
                self._engine.execute(step, none)
            except EngineError as exc:
                if not isinstance(step, StartContainer):
                    raise
                log.error(
                    "rollback: cannot start %s/%s: %s", tx.app, step.service, exc
                )  # the next reconcile repairs it
        log.warning("%s: rolled back %s -> %s: %s", tx.app, tx.to_release, tx.from_release, reason)
        try:
            tx = self._journal.advance(tx, "rolled-back", detail=finish)
        except JournalError as exc:
            log.error("rollback of %s: %s", tx.app, exc)
            return tx
        self._fault("rolled-back")
        return tx

    def recover(self) -> list[Transaction]:
        """Roll back every transaction a crash interrupted; call before anything else at start."""
        recovered = []
        for tx in self._journal.unfinished():
            reason = f"{INTERRUPTED}{tx.phase}" + (f" ({tx.error})" if tx.error else "")
            recovered.append(self.rollback(tx, reason, outcome="interrupted"))
        return recovered


@dataclass
class _Check:
    """A check the agent runs itself: healthy after a pass, unhealthy after `retries` failures in a row.

    It runs once per `interval` (a Compose healthcheck's own; probes every round), and
    between runs its last status stands.
    """

    failures: int = 0
    status: str = "starting"
    next_run: float = 0.0

    def due(self, elapsed: timedelta) -> bool:
        return elapsed.total_seconds() >= self.next_run

    def record(self, ok: bool, retries: int, start_period: float, elapsed: timedelta, interval: float = 0.0) -> str:
        self.next_run = elapsed.total_seconds() + interval
        if ok:
            self.failures = 0
            self.status = "healthy"
        else:
            if elapsed.total_seconds() >= start_period:
                self.failures += 1
            self.status = "unhealthy" if self.failures >= retries else "starting"
        return self.status


def _fit(text: str, budget: int) -> str:
    """The end of `text` taking at most `budget` characters as JSON (escapes count), for the journal's detail."""
    while text and len(json.dumps(text)) > budget:
        text = text[len(text) // 2 + 1 :]
    return text


def _probe_argv(test: tuple[str, ...]) -> tuple[str, ...]:
    """Compose `test` (["CMD", ...] or ["CMD-SHELL", "..."]) as an argv."""
    if test and test[0] == "CMD-SHELL":
        return ("/bin/sh", "-c", " ".join(test[1:]))
    if test and test[0] == "CMD":
        return test[1:]
    return test
