"""The agent's planners: (what the engine has, what the device must run) -> ordered steps, as data.

Pure functions: no engine calls, no clock, no I/O. Executors (`agent.engine`, the update
transaction in `agent.transaction`) carry the steps out; `edgefleet agent plan` prints them.
`plan` reconciles every app at once; `plan_update` is one app's update transaction (its
journaled phases, the steps between them, the health probe, the commit) for each update
strategy, and `plan_rollback` undoes one. Both order starts and stops the same way. Rules:

- Each app is planned on its own; an app's steps never name another app's objects.
- A service is recreated only when its definition (`config_digest`) changed; a matching
  container that is stopped is started again; extra containers of a service are removed.
- Images are fetched before anything is stopped (download-then-kill).
- Stops and removals run in reverse `depends_on` order, starts in `depends_on` order (in an
  update and its rollback too); services the new release drops stop first.
- Apps no longer assigned lose their containers and network; named volumes are kept, as
  they are across releases (data survives; removing it is a separate, explicit act).
- Only objects carrying the agent's labels are ever observed, so nothing else is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from edgefleet.agent.errors import PlanError as PlanError

# --- inputs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    """One service as it must run: the engine definition is summarised by `config_digest`."""

    app: str
    service: str
    release: str
    image: str
    config_digest: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AppTarget:
    """One app's target release."""

    app: str
    release: str
    services: tuple[ServiceTarget, ...]
    volumes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ObservedContainer:
    """A container the agent created, as its labels and the engine describe it."""

    id: str
    app: str
    service: str
    release: str
    config_digest: str
    running: bool


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything of the agent's that the engine has."""

    containers: tuple[ObservedContainer, ...] = ()
    networks: frozenset[str] = frozenset()
    """Apps that have their network."""
    volumes: frozenset[tuple[str, str]] = frozenset()
    """(app, volume) pairs."""
    images: frozenset[str] = frozenset()
    """Images present, by digest reference."""


# --- steps --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchImage:
    image: str


@dataclass(frozen=True, slots=True)
class CreateNetwork:
    app: str


@dataclass(frozen=True, slots=True)
class CreateVolume:
    app: str
    volume: str


@dataclass(frozen=True, slots=True)
class CreateContainer:
    target: ServiceTarget


@dataclass(frozen=True, slots=True)
class StartContainer:
    app: str
    service: str
    container_id: str | None = None
    """None for a container created earlier in the same plan (the executor looks it up by labels)."""
    config_digest: str | None = None
    """With no id: the definition of the container created earlier (an update's old one may exist too)."""


@dataclass(frozen=True, slots=True)
class StopContainer:
    app: str
    service: str
    container_id: str


@dataclass(frozen=True, slots=True)
class RemoveContainer:
    app: str
    service: str
    container_id: str


@dataclass(frozen=True, slots=True)
class RemoveNetwork:
    app: str


Step = (
    FetchImage
    | CreateNetwork
    | CreateVolume
    | CreateContainer
    | StartContainer
    | StopContainer
    | RemoveContainer
    | RemoveNetwork
)


Strategy = Literal["download-then-kill", "kill-then-download", "hand-over"]


ForwardPhase = Literal["downloading", "downloaded", "staged", "switching", "probing", "committed"]
"""The phases an update plan journals (`agent.journal.Phase` has them, and the rest)."""


@dataclass(frozen=True, slots=True)
class RecordPhase:
    """Journal the update's next phase (with what recovery must know) before any step after it."""

    phase: ForwardPhase
    detail: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class ProbeHealth:
    """Watch the new release for its health window: healthy goes on to commit, anything else rolls back."""

    app: str


UpdateStep = Step | RecordPhase | ProbeHealth


@dataclass(frozen=True, slots=True)
class UpdatePlan:
    """One app's update transaction as data (`plan_update`)."""

    steps: tuple[UpdateStep, ...]
    fetch: tuple[str, ...]
    """Images the engine lacks (for the free-space check before anything begins)."""


# --- planning -----------------------------------------------------------------------


class Dependent(Protocol):
    """Anything with a service name and the services it depends on (targets, container specs)."""

    @property
    def service(self) -> str: ...

    @property
    def depends_on(self) -> tuple[str, ...]: ...


D = TypeVar("D", bound=Dependent)


def dependency_order(services: Iterable[D]) -> list[D]:
    """Services so that each comes after what it depends on (ties by name, so plans are stable).

    Raises:
        PlanError: unknown dependency or a cycle.
    """
    by_name = {s.service: s for s in services}
    ordered: list[D] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise PlanError("depends_on forms a cycle: " + " -> ".join((*path, name)))
        if name not in by_name:
            raise PlanError(f"{path[-1] if path else '?'} depends on unknown service {name}")
        state[name] = 1
        for dep in sorted(by_name[name].depends_on):
            visit(dep, (*path, name))
        state[name] = 2
        ordered.append(by_name[name])

    for name in sorted(by_name):
        visit(name, ())
    return ordered


def _plan_app(target: AppTarget, observed: Observed, fetch: list[Step]) -> list[Step]:
    mine = [c for c in observed.containers if c.app == target.app]
    setup: list[Step] = []
    if target.app not in observed.networks:
        setup.append(CreateNetwork(target.app))
    setup.extend(CreateVolume(target.app, v) for v in sorted(target.volumes) if (target.app, v) not in observed.volumes)

    stops: list[Step] = []
    removes: list[Step] = []
    creates: list[Step] = []
    starts: list[Step] = []
    order = dependency_order(target.services)
    wanted = {s.service for s in order}
    for service in order:
        existing = sorted((c for c in mine if c.service == service.service), key=lambda c: c.id)
        keep = next((c for c in existing if c.config_digest == service.config_digest), None)
        for container in existing:
            if container is keep:
                continue
            if container.running:
                stops.append(StopContainer(container.app, container.service, container.id))
            removes.append(RemoveContainer(container.app, container.service, container.id))
        if keep is None:
            if service.image not in observed.images and FetchImage(service.image) not in fetch:
                fetch.append(FetchImage(service.image))
            creates.append(CreateContainer(service))
            starts.append(StartContainer(service.app, service.service))
        elif not keep.running:
            starts.append(StartContainer(keep.app, keep.service, keep.id))
    for container in sorted(mine, key=lambda c: (c.service, c.id)):
        if container.service not in wanted:
            if container.running:
                stops.append(StopContainer(container.app, container.service, container.id))
            removes.append(RemoveContainer(container.app, container.service, container.id))
    # Dependents stop first; `stops` was built in dependency order.
    return [*setup, *reversed(stops), *removes, *creates, *starts]


def _plan_removal(app: str, observed: Observed) -> list[Step]:
    mine = sorted((c for c in observed.containers if c.app == app), key=lambda c: (c.service, c.id))
    steps: list[Step] = [StopContainer(c.app, c.service, c.id) for c in mine if c.running]
    steps.extend(RemoveContainer(c.app, c.service, c.id) for c in mine)
    if app in observed.networks:
        steps.append(RemoveNetwork(app))
    return steps


def plan(observed: Observed, targets: Mapping[str, AppTarget]) -> tuple[Step, ...]:
    """The steps that take the engine from `observed` to running exactly `targets` (one entry per app).

    Raises:
        PlanError: a target with a dependency cycle or an unknown dependency.
    """
    fetch: list[Step] = []
    per_app: list[Step] = []
    for app in sorted(targets):
        per_app.extend(_plan_app(targets[app], observed, fetch))
    present = {c.app for c in observed.containers} | set(observed.networks)
    for app in sorted(present - set(targets)):
        per_app.extend(_plan_removal(app, observed))
    return (*fetch, *per_app)


def plan_update(
    observed: Observed,
    app: str,
    services: Sequence[ServiceTarget],
    *,
    volumes: tuple[str, ...] = (),
    strategy: Strategy = "download-then-kill",
) -> UpdatePlan:
    """The steps that move `app` to the release of `services` as a transaction, for `strategy`.

    Only services whose definition changed get new containers; the running containers they
    replace (and those of services the release drops) are retired: stopped at ``downloading``
    (kill-then-download) or at ``switching`` (download-then-kill), or left running beside the
    new ones until the commit (hand-over), and removed after ``committed``. The journal's
    details name the retired containers and the new definitions, and the order to undo them
    in (`plan_rollback`), before anything is stopped or created.

    Raises:
        PlanError: a dependency cycle or an unknown dependency.
    """
    mine = [c for c in observed.containers if c.app == app]
    order = dependency_order(services)
    wanted = {s.service for s in order}
    create = [s for s in order if not any(c.service == s.service and c.config_digest == s.config_digest for c in mine)]
    created = {s.service for s in create}
    retire = [(c.service, c.id) for s in order for c in _of(mine, s.service) if s.service in created and c.running]
    retire += [(c.service, c.id) for c in sorted(mine, key=_by_service) if c.service not in wanted and c.running]
    fetch = tuple(sorted({s.image for s in create} - observed.images))
    undo = [s.service for s in order] + sorted({c.service for c in mine} - wanted)
    old = {"old": dict(retire), "order": undo}
    stops = [StopContainer(app, service, cid) for service, cid in reversed(retire)]
    steps: list[UpdateStep] = []
    if strategy == "kill-then-download":
        steps += [RecordPhase("downloading", old), *stops]  # the old containers are named before they stop
    else:
        steps.append(RecordPhase("downloading"))
    steps += [FetchImage(image) for image in fetch]
    steps += [
        RecordPhase("downloaded"),
        RecordPhase("staged", {"new": {s.service: s.config_digest for s in create}} | old),
    ]
    if app not in observed.networks:
        steps.append(CreateNetwork(app))
    steps += [CreateVolume(app, v) for v in volumes if (app, v) not in observed.volumes]
    steps += [CreateContainer(s) for s in create]
    steps.append(RecordPhase("switching"))
    if strategy == "download-then-kill":
        steps += stops
    steps += [StartContainer(app, s.service, config_digest=s.config_digest) for s in create]
    steps += [RecordPhase("probing"), ProbeHealth(app), RecordPhase("committed")]
    steps += [RemoveContainer(app, service, cid) for service, cid in reversed(retire)]
    return UpdatePlan(steps=tuple(steps), fetch=fetch)


def plan_rollback(
    app: str, detail: Mapping[str, Any], ids: Mapping[tuple[str, str], str]
) -> tuple[RemoveContainer | StartContainer, ...]:
    """Undo an update from its journal detail: remove its new containers, start the retired ones again.

    `ids` maps (service, config digest) to the containers the engine has of `app` now.
    Removals in reverse dependency order, starts in dependency order (as the journal recorded
    it; an older journal's transactions without an order go by name).
    """
    new: Mapping[str, str] = detail.get("new", {})
    old: Mapping[str, str] = detail.get("old", {})
    order = [str(name) for name in detail.get("order", [])]
    order += sorted((set(new) | set(old)) - set(order))
    removes = [
        RemoveContainer(app, service, ids[(service, new[service])])
        for service in reversed(order)
        if service in new and (service, new[service]) in ids
    ]
    starts = [StartContainer(app, service, old[service]) for service in order if service in old]
    return (*removes, *starts)


def _of(containers: Iterable[ObservedContainer], service: str) -> list[ObservedContainer]:
    return sorted((c for c in containers if c.service == service), key=lambda c: c.id)


def _by_service(container: ObservedContainer) -> tuple[str, str]:
    return container.service, container.id


def describe(step: Step | UpdateStep) -> str:
    """One line for people (`edgefleet agent plan`, the agent's log)."""
    match step:
        case RecordPhase(phase=phase):
            return f"journal {phase}"
        case ProbeHealth(app=app):
            return f"probe {app} for its health window"
        case FetchImage(image=image):
            return f"fetch {image}"
        case CreateNetwork(app=app):
            return f"create network {app}"
        case CreateVolume(app=app, volume=volume):
            return f"create volume {app}/{volume}"
        case CreateContainer(target=t):
            return f"create {t.app}/{t.service} (release {t.release}, definition {t.config_digest[:8]})"
        case StartContainer(app=app, service=service):
            return f"start {app}/{service}"
        case StopContainer(app=app, service=service, container_id=cid):
            return f"stop {app}/{service} ({cid[:12]})"
        case RemoveContainer(app=app, service=service, container_id=cid):
            return f"remove {app}/{service} ({cid[:12]})"
        case RemoveNetwork(app=app):
            return f"remove network {app}"
