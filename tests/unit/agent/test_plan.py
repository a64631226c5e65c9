"""The reconcile planner: table tests of its rules, and properties over random current/target pairs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.agent.engine.memory import MemoryEngine
from edgefleet.agent.plan import (
    AppTarget,
    CreateContainer,
    CreateNetwork,
    CreateVolume,
    FetchImage,
    Observed,
    ObservedContainer,
    PlanError,
    RemoveContainer,
    RemoveNetwork,
    ServiceTarget,
    StartContainer,
    StopContainer,
    plan,
    plan_update,
)

IMG = "reg.example/a@sha256:" + "1" * 64


def svc(service: str, digest: str = "d1", *, app: str = "sensor", deps: tuple[str, ...] = ()) -> ServiceTarget:
    return ServiceTarget(app=app, service=service, release="1.0.0", image=IMG, config_digest=digest, depends_on=deps)


def running(target: AppTarget) -> Observed:
    """The engine state of a device that runs exactly `target`."""
    containers = tuple(
        ObservedContainer(f"{s.app}-{s.service}", s.app, s.service, s.release, s.config_digest, True)
        for s in target.services
    )
    return Observed(
        containers=containers,
        networks=frozenset({target.app}),
        volumes=frozenset((target.app, v) for v in target.volumes),
        images=frozenset(s.image for s in target.services),
    )


def test_running_the_target_needs_no_steps() -> None:
    target = AppTarget("sensor", "1.0.0", (svc("db"), svc("web", deps=("db",))), volumes=("data",))
    assert plan(running(target), {"sensor": target}) == ()


def test_fresh_device_fetches_then_creates_in_dependency_order() -> None:
    target = AppTarget("sensor", "1.0.0", (svc("web", deps=("db",)), svc("db")), volumes=("data",))
    assert plan(Observed(), {"sensor": target}) == (
        FetchImage(IMG),
        CreateNetwork("sensor"),
        CreateVolume("sensor", "data"),
        CreateContainer(svc("db")),
        CreateContainer(svc("web", deps=("db",))),
        StartContainer("sensor", "db"),
        StartContainer("sensor", "web"),
    )


def test_only_the_changed_service_is_recreated() -> None:
    old = AppTarget("sensor", "1.0.0", (svc("db"), svc("web", deps=("db",))), volumes=("data",))
    new = AppTarget("sensor", "1.1.0", (svc("db"), svc("web", "d2", deps=("db",))), volumes=("data",))
    steps = plan(running(old), {"sensor": new})
    assert steps == (
        StopContainer("sensor", "web", "sensor-web"),
        RemoveContainer("sensor", "web", "sensor-web"),
        CreateContainer(svc("web", "d2", deps=("db",))),
        StartContainer("sensor", "web"),
    )


def test_dependents_stop_before_what_they_depend_on() -> None:
    old = AppTarget("sensor", "1.0.0", (svc("db"), svc("web", deps=("db",))))
    new = AppTarget("sensor", "2.0.0", (svc("db", "d2"), svc("web", "d2", deps=("db",))))
    stops = [s for s in plan(running(old), {"sensor": new}) if isinstance(s, StopContainer)]
    assert [s.service for s in stops] == ["web", "db"]


def test_unassigned_apps_are_removed_but_their_volumes_kept_and_other_apps_untouched() -> None:
    a = AppTarget("sensor", "1.0.0", (svc("main"),), volumes=("data",))
    b = AppTarget("analytics", "1.0.0", (svc("main", app="analytics"),), volumes=("cache",))
    both = Observed(
        containers=running(a).containers + running(b).containers,
        networks=frozenset({"sensor", "analytics"}),
        volumes=frozenset({("sensor", "data"), ("analytics", "cache")}),
        images=frozenset({IMG}),
    )
    steps = plan(both, {"analytics": b})
    assert steps == (
        StopContainer("sensor", "main", "sensor-main"),
        RemoveContainer("sensor", "main", "sensor-main"),
        RemoveNetwork("sensor"),
    )


def test_stopped_container_is_started_not_recreated() -> None:
    target = AppTarget("sensor", "1.0.0", (svc("main"),))
    observed = running(target)
    stopped = replace(observed, containers=(replace(observed.containers[0], running=False),))
    assert plan(stopped, {"sensor": target}) == (StartContainer("sensor", "main", "sensor-main"),)


def test_cycles_and_unknown_dependencies_are_refused() -> None:
    cycle = AppTarget("sensor", "1", (svc("a", deps=("b",)), svc("b", deps=("a",))))
    with pytest.raises(PlanError, match="cycle"):
        plan(Observed(), {"sensor": cycle})
    with pytest.raises(PlanError, match="unknown"):
        plan(Observed(), {"sensor": AppTarget("sensor", "1", (svc("a", deps=("zz",)),))})


# --- properties -----------------------------------------------------------------------

APPS = ("sensor", "analytics", "signage")
SERVICES = ("db", "web", "worker")
DIGESTS = ("d1", "d2", "d3")
IMAGES = tuple(f"reg.example/{n}@sha256:{n * 64}" for n in "123")


@st.composite
def app_targets(draw: st.DrawFn, app: str) -> AppTarget:
    names = draw(st.lists(st.sampled_from(SERVICES), min_size=1, unique=True))
    services = []
    for index, name in enumerate(sorted(names)):
        deps = tuple(draw(st.lists(st.sampled_from(sorted(names)[:index]), unique=True))) if index else ()
        image = draw(st.sampled_from(IMAGES))
        services.append(ServiceTarget(app, name, "r", image, draw(st.sampled_from(DIGESTS)), deps))
    volumes = tuple(draw(st.lists(st.sampled_from(("data", "cache")), unique=True)))
    return AppTarget(app, "r", tuple(services), volumes)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Observed, dict[str, AppTarget]]:
    containers = tuple(
        ObservedContainer(
            f"c{i}",
            draw(st.sampled_from(APPS)),
            draw(st.sampled_from(SERVICES)),
            "old",
            draw(st.sampled_from(DIGESTS)),
            draw(st.booleans()),
        )
        for i in range(draw(st.integers(0, 8)))
    )
    observed = Observed(
        containers=containers,
        networks=frozenset(draw(st.lists(st.sampled_from(APPS), unique=True))) | {c.app for c in containers},
        volumes=frozenset(
            draw(st.lists(st.tuples(st.sampled_from(APPS), st.sampled_from(("data", "cache"))), unique=True))
        ),
        images=frozenset(draw(st.lists(st.sampled_from(IMAGES), unique=True))),
    )
    apps = draw(st.lists(st.sampled_from(APPS), unique=True))
    return observed, {app: draw(app_targets(app)) for app in apps}


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_applying_the_plan_reaches_the_target_and_then_nothing_is_left_to_do(
    world: tuple[Observed, dict[str, AppTarget]],
) -> None:
    observed, targets = world
    engine = MemoryEngine(observed)
    for step in plan(observed, targets):
        if isinstance(step, RemoveContainer):
            (removed,) = [c for c in engine.state.containers if c.id == step.container_id]
            assert not removed.running, "removed while running"
        engine.apply(step)
    final = engine.state

    assert plan(final, targets) == ()
    assert {c.app for c in final.containers} <= set(targets)
    assert final.networks == set(targets)
    assert observed.volumes <= final.volumes  # volumes are never removed
    for app, target in targets.items():
        have = sorted((c.service, c.config_digest, c.running) for c in final.containers if c.app == app)
        assert have == sorted((s.service, s.config_digest, True) for s in target.services)


@settings(max_examples=200, deadline=None)
@given(worlds())
def test_an_apps_steps_never_touch_another_apps_containers(world: tuple[Observed, dict[str, AppTarget]]) -> None:
    observed, targets = world
    for step in plan(observed, targets):
        if isinstance(step, StopContainer | RemoveContainer):
            (container,) = [c for c in observed.containers if c.id == step.container_id]
            assert container.app == step.app
        if isinstance(step, StopContainer | RemoveContainer) and step.app in targets:
            kept = [c for c in observed.containers if c.app == step.app]
            assert kept  # only an app's own containers are ever stopped for it


def test_every_step_has_a_one_line_description() -> None:
    from edgefleet.agent.plan import describe

    steps = plan(Observed(), {"sensor": AppTarget("sensor", "1", (svc("db"),), volumes=("data",))})
    assert [describe(s) for s in steps] == [
        f"fetch {IMG}",
        "create network sensor",
        "create volume sensor/data",
        "create sensor/db (release 1.0.0, definition d1)",
        "start sensor/db",
    ]
    assert describe(StopContainer("a", "b", "0123456789abcdef")) == "stop a/b (0123456789ab)"
    assert describe(RemoveNetwork("a")) == "remove network a"


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_reconcile_and_an_update_order_their_starts_and_stops_alike(
    world: tuple[Observed, dict[str, AppTarget]],
) -> None:
    """One ordering rule for both planners: starts in `depends_on` order, stops in reverse, on the same world.

    They need not start or stop the same containers (reconcile also starts a stopped one it
    keeps; an update keeps what did not change as it is), but what both do, they do in one order.
    """
    observed, targets = world
    reconciled = plan(observed, targets)
    for app, target in targets.items():
        updated = plan_update(observed, app, target.services, volumes=target.volumes).steps
        for kind in (StartContainer, StopContainer):
            one = [s.service for s in reconciled if isinstance(s, kind) and s.app == app]
            other = [s.service for s in updated if isinstance(s, kind)]
            assert [s for s in one if s in other] == [s for s in other if s in one], kind
