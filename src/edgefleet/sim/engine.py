"""The simulated container engine of one device: the agent's update plans carried out on an engine in memory.

No container runs and no image is pulled. An update of one app is the agent's own plan
(`agent.plan.plan_update`: the same steps, in the same order, for the release's strategy
and its services' `depends_on`), carried out on `agent.engine.memory.MemoryEngine`; the
device's loop (`sim.device`) walks the plan and waits where the agent would work (a
download, the health window). A failed health verdict is undone by the agent's
`plan_rollback`, so the old release's very containers run again. What runs per app::

    running(old) --begin--> downloading --downloaded--> starting --commit--> running(new)
                                                                 --roll_back-> running(old)

How an update goes (phase durations, which service fails) is decided up front from the
seed (`course`), so the same seed gives the same fleet. Everything here is pure or in-memory;
`carry_out` waits with the sleep it is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edgefleet.agent.engine.memory import MemoryEngine
from edgefleet.agent.plan import (
    Observed,
    ProbeHealth,
    RecordPhase,
    ServiceTarget,
    Step,
    Strategy,
    UpdatePlan,
    plan,
    plan_rollback,
    plan_update,
)
from edgefleet.agent.spec import ContainerSpec
from edgefleet.sim.chance import draw, spread, update_fails
from edgefleet.sim.errors import EngineStateError

Phase = Literal["running", "downloading", "starting"]


@dataclass(frozen=True, slots=True)
class SimRelease:
    """A verified release as the simulated engine runs it: its containers as the agent plans them."""

    version: str
    release_counter: int
    services: tuple[ServiceTarget, ...]
    """Each service's container as `agent.spec` defines it (its definition's digest, image, `depends_on`)."""
    strategy: Strategy = "download-then-kill"
    volumes: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(s.service for s in self.services))

    @classmethod
    def of(
        cls,
        specs: Sequence[ContainerSpec],
        *,
        version: str,
        release_counter: int,
        strategy: Strategy,
        volumes: tuple[str, ...],
    ) -> SimRelease:
        """From the release's container specs, as the agent makes them (`agent.spec.release_specs`)."""
        return cls(version, release_counter, tuple(spec.target() for spec in specs), strategy, volumes)


@dataclass(frozen=True, slots=True)
class Course:
    """How one simulated update goes, decided before it starts."""

    download: float
    start: float
    failing: str | None
    """The service that fails its health check; None when the release comes up healthy."""

    @property
    def fails(self) -> bool:
        return self.failing is not None


def course(
    seed: int,
    *,
    device: int,
    app: str,
    mark: str,
    services: Sequence[str],
    fail_rate: float,
    download: float,
    start: float,
) -> Course:
    """The course of `device`'s update of `app` to the release `mark`, fixed by the seed (pure)."""
    failing = None
    if services and update_fails(seed, device=device, app=app, mark=mark, rate=fail_rate):
        ordered = sorted(services)
        failing = ordered[int(draw(seed, "service", device, app, mark) * len(ordered))]
    return Course(
        download=spread(seed, download, "download", device, app, mark),
        start=spread(seed, start, "start", device, app, mark),
        failing=failing,
    )


@dataclass
class _Update:
    """An app's update in progress: the release it moves to, its phase, and what the journal would hold."""

    release: SimRelease
    phase: Phase = "downloading"
    detail: dict[str, Any] = field(default_factory=dict)


class SimEngine:
    """Per app, what runs (containers on an engine in memory) and how far an update has got."""

    def __init__(self, running: Mapping[str, SimRelease] | None = None, *, keep_steps: bool = False) -> None:
        """`keep_steps`: keep every step carried out in `memory.done` (tests; a simulation keeps none: unbounded)."""
        self.memory = MemoryEngine()
        self.keep_steps = keep_steps
        self.releases: dict[str, SimRelease] = {}
        self._updates: dict[str, _Update] = {}
        self._images: dict[str, str] = {}
        """Definition digest -> its image (the memory engine keeps none per container)."""
        for app, release in sorted((running or {}).items()):
            self._install(app, release)

    def _install(self, app: str, release: SimRelease) -> None:
        """A release that ran before this simulation started: its containers, running at once."""
        for step in self.begin(app, release).steps:
            if not isinstance(step, RecordPhase) and isinstance(step, Step):
                self.execute(app, step)
        self.commit(app)

    def begin(self, app: str, release: SimRelease) -> UpdatePlan:
        """The agent's plan that moves `app` to `release`; the old release keeps running until it says.

        Raises:
            EngineStateError: `app` is updating already.
        """
        if app in self._updates:
            raise EngineStateError(f"{app} is {self._updates[app].phase}, not running")
        self._images |= {s.config_digest: s.image for s in release.services}
        self._updates[app] = _Update(release)
        return plan_update(
            self.memory.observe(), app, release.services, volumes=release.volumes, strategy=release.strategy
        )

    def record(self, app: str, step: RecordPhase) -> None:
        """A phase the agent journals: its detail is what a rollback undoes; ``downloaded`` starts the new release."""
        update = self._in(app)
        update.detail |= step.detail
        if step.phase == "downloaded":
            update.phase = "starting"

    def execute(self, app: str, step: Step) -> None:
        """One engine step of the plan (`MemoryEngine` enforces what a real engine does, and records it)."""
        self._apply(step)

    def failing(self, app: str, service: str) -> None:
        """The new release's `service` crashes: its container exits as soon as it starts."""
        digest = next(s.config_digest for s in self._in(app).release.services if s.service == service)
        self.memory.failing.add(digest)

    def commit(self, app: str) -> SimRelease:
        """The new release is healthy: it is what runs (the plan removes the old containers after this)."""
        release = self._in(app).release
        self.releases[app] = release
        del self._updates[app]
        return release

    def roll_back(self, app: str) -> SimRelease | None:
        """Undo the update as the agent does (`plan_rollback`): its new containers go, the old ones start again."""
        update = self._in(app)
        for step in plan_rollback(app, update.detail, self.memory.ids(app)):
            self._apply(step)
        self.memory.failing -= {s.config_digest for s in update.release.services}  # a retry may come up healthy
        del self._updates[app]
        return self.releases.get(app)

    def remove(self, app: str) -> None:
        """The app is no longer assigned: its containers and network go (as `agent.plan.plan` has it).

        Not while it updates: the update ends first.
        """
        if app in self._updates:
            return
        self.releases.pop(app, None)
        mine = Observed(
            containers=tuple(c for c in self.memory.state.containers if c.app == app),
            networks=self.memory.state.networks & {app},
        )
        for step in plan(mine, {}):
            self._apply(step)

    def _apply(self, step: Step) -> None:
        if self.keep_steps:
            self.memory.execute(step, {})
        else:
            self.memory.apply(step)

    def _in(self, app: str) -> _Update:
        update = self._updates.get(app)
        if update is None:
            raise EngineStateError(f"{app} is running, not updating")
        return update

    def running(self) -> dict[str, SimRelease]:
        return dict(self.releases)

    def updating(self) -> bool:
        return bool(self._updates)

    def phase(self, app: str) -> Phase:
        update = self._updates.get(app)
        return "running" if update is None else update.phase

    def status(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per app and service, as `DockerEngine.status()` reports them (state, health, restarts, release, image).

        Where a service has two containers (an update's old and new), the new release's is shown;
        while it is health-checked its health is ``starting``.
        """
        report: dict[str, dict[str, dict[str, Any]]] = {}
        for container in sorted(self.memory.state.containers, key=lambda c: (c.app, c.service, c.id)):
            update = self._updates.get(container.app)
            shown = report.setdefault(container.app, {}).get(container.service)
            new = update is not None and container.release == update.release.version
            if shown is not None and not new:
                continue
            state = self.memory.health(container.id)
            starting = new and update is not None and update.phase == "starting" and state.state == "running"
            report[container.app][container.service] = {
                "state": state.state,
                "health": "starting" if starting else None,
                "restarts": 0,
                "release": container.release,
                "image": self._images.get(container.config_digest),
            }
        return report


async def carry_out(
    engine: SimEngine,
    app: str,
    planned: UpdatePlan,
    how: Course,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Walk the agent's plan as its transaction does (`agent.transaction`), waiting where it works; True: committed.

    The engine's steps are carried out at once; the download (the release's files and images)
    takes `how.download` before ``downloaded`` is recorded, the health window `how.start`. A
    failing update (`how.failing`: its service's new container exits as it starts,
    `SimEngine.failing`) is judged at the end of the window and rolled back as the agent rolls
    it back (`agent.plan.plan_rollback`).
    """
    for step in planned.steps:
        match step:
            case RecordPhase(phase="committed"):
                engine.commit(app)
            case RecordPhase(phase="downloaded"):
                await sleep(how.download)
                engine.record(app, step)
            case RecordPhase():
                engine.record(app, step)
            case ProbeHealth():
                await sleep(how.start)
                if how.fails:
                    engine.roll_back(app)
                    return False
            case _:
                engine.execute(app, step)
    return True
