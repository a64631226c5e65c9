"""The simulated container engine of one device: which release each app runs, and an update's course, as data.

No containers run and no image is pulled. An update takes one app through the phases of
the agent's transaction (`agent.transaction`), with waits instead of effects::

    running(old) --begin--> downloading --downloaded--> starting --finish(healthy)--> running(new)
                                                                 --finish(unhealthy)-> running(old)  (rolled back)

How an update goes (phase durations, which service fails) is decided up front from the
seed (`course`), so the same seed gives the same fleet. The device's loop (`sim.device`)
does the waiting; everything here is pure or in-memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from edgefleet.manifest import Release
from edgefleet.sim.chance import draw, spread, update_fails
from edgefleet.sim.errors import EngineStateError

Phase = Literal["running", "downloading", "starting"]


@dataclass(frozen=True, slots=True)
class SimRelease:
    """A verified release as the simulated engine runs it: its services and their images."""

    version: str
    release_counter: int
    images: tuple[tuple[str, str], ...]
    """(service, image) pairs from the verified manifest."""

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(service for service, _ in self.images)

    @classmethod
    def of(cls, manifest: Release, release_counter: int) -> SimRelease:
        images = tuple(sorted((s.name, s.compose.image) for s in manifest.services))
        return cls(version=manifest.version, release_counter=release_counter, images=images)


@dataclass(frozen=True, slots=True)
class AppState:
    """One app on the simulated engine: what runs, and the update in progress if any."""

    running: SimRelease | None = None
    phase: Phase = "running"
    target: SimRelease | None = None


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


class SimEngine:
    """Per app, what runs and how far an update has got; transitions refuse any phase they do not start from."""

    def __init__(self, running: Mapping[str, SimRelease] | None = None) -> None:
        self.apps: dict[str, AppState] = {app: AppState(running=release) for app, release in (running or {}).items()}

    def _in(self, app: str, phase: Phase) -> AppState:
        state = self.apps.get(app, AppState())
        if state.phase != phase:
            raise EngineStateError(f"{app} is {state.phase}, not {phase}")
        return state

    def begin(self, app: str, release: SimRelease) -> None:
        """Start moving `app` to `release`: its images download (the old release keeps running)."""
        self.apps[app] = replace(self._in(app, "running"), phase="downloading", target=release)

    def downloaded(self, app: str) -> None:
        """The new release's images are in: its containers start and are health-checked."""
        self.apps[app] = replace(self._in(app, "downloading"), phase="starting")

    def finish(self, app: str, *, healthy: bool) -> SimRelease | None:
        """Commit the new release, or roll back to the old one; returns what runs now."""
        state = self._in(app, "starting")
        running = state.target if healthy else state.running
        self.apps[app] = AppState(running=running)
        return running

    def remove(self, app: str) -> None:
        """The app is no longer assigned: its containers go (nothing happens while it updates)."""
        if self.apps.get(app, AppState()).phase == "running":
            self.apps.pop(app, None)

    def running(self) -> dict[str, SimRelease]:
        return {app: state.running for app, state in self.apps.items() if state.running is not None}

    def updating(self) -> bool:
        return any(state.phase != "running" for state in self.apps.values())

    def status(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per app and service, as `DockerEngine.status()` reports them (state, health, restarts, release, image)."""
        report: dict[str, dict[str, dict[str, Any]]] = {}
        for app, state in sorted(self.apps.items()):
            shown, health = state.running, None
            if state.phase == "starting":
                shown, health = state.target, "starting"
            if shown is None:
                continue
            report[app] = {
                service: {"state": "running", "health": health, "restarts": 0, "release": shown.version, "image": image}
                for service, image in shown.images
            }
        return report
