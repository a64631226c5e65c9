"""The simulated engine's state machine: updates commit or roll back, and nothing skips a phase."""

from __future__ import annotations

import pytest

from edgefleet.manifest import parse_manifest
from edgefleet.sim.engine import Course, SimEngine, SimRelease, course
from edgefleet.sim.errors import EngineStateError
from tests.publishing import IMAGE, compose

OLD = SimRelease("1.0.0", 1, (("main", IMAGE),))
NEW = SimRelease("1.1.0", 2, (("main", IMAGE), ("sidecar", IMAGE)))


def test_a_healthy_update_goes_through_every_phase_and_commits() -> None:
    engine = SimEngine({"sensor": OLD})
    engine.begin("sensor", NEW)
    assert engine.updating()
    assert engine.apps["sensor"].phase == "downloading"
    assert engine.status()["sensor"]["main"]["release"] == "1.0.0"  # the old release runs while it downloads
    engine.downloaded("sensor")
    starting = engine.status()["sensor"]
    assert set(starting) == {"main", "sidecar"}
    assert {s["health"] for s in starting.values()} == {"starting"}
    assert engine.finish("sensor", healthy=True) == NEW
    assert not engine.updating()
    assert engine.running() == {"sensor": NEW}
    assert engine.status()["sensor"]["sidecar"] == {
        "state": "running",
        "health": None,
        "restarts": 0,
        "release": "1.1.0",
        "image": IMAGE,
    }


def test_an_unhealthy_update_rolls_back_to_the_old_release() -> None:
    engine = SimEngine({"sensor": OLD})
    engine.begin("sensor", NEW)
    engine.downloaded("sensor")
    assert engine.finish("sensor", healthy=False) == OLD
    assert engine.running() == {"sensor": OLD}
    assert set(engine.status()["sensor"]) == {"main"}


def test_a_failed_first_install_leaves_nothing_running() -> None:
    engine = SimEngine()
    engine.begin("sensor", OLD)
    engine.downloaded("sensor")
    assert engine.finish("sensor", healthy=False) is None
    assert engine.running() == {}
    assert engine.status() == {}


def test_transitions_refuse_a_phase_they_do_not_start_from() -> None:
    engine = SimEngine({"sensor": OLD})
    with pytest.raises(EngineStateError, match="running, not downloading"):
        engine.downloaded("sensor")
    with pytest.raises(EngineStateError, match="running, not starting"):
        engine.finish("sensor", healthy=True)
    engine.begin("sensor", NEW)
    with pytest.raises(EngineStateError, match="downloading, not running"):
        engine.begin("sensor", NEW)
    engine.remove("sensor")  # not while it updates
    assert engine.apps["sensor"].phase == "downloading"


def test_an_app_no_longer_assigned_is_removed() -> None:
    engine = SimEngine({"sensor": OLD, "other": OLD})
    engine.remove("other")
    assert set(engine.running()) == {"sensor"}


def test_a_release_is_made_from_its_verified_manifest() -> None:
    manifest = parse_manifest(compose("sensor", "1.2.0").encode(), source="test")
    assert SimRelease.of(manifest, 3) == SimRelease("1.2.0", 3, (("main", IMAGE),))


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
