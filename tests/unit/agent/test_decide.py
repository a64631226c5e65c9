"""Which apps an assignment moves: the agent and the simulated device decide with the same function."""

from __future__ import annotations

from edgefleet.agent.decide import Installed, choose_updates
from edgefleet.releases import DirectorTarget

DEVICE = "00000000-0000-4000-8000-000000000001"


def target(version: str, counter: int, retry: int = 0, app: str = "sensor") -> DirectorTarget:
    return DirectorTarget(
        app=app, version=version, release_counter=counter, device_id=DEVICE, arch="amd64", retry=retry
    )


def installed(version: str, counter: int) -> Installed:
    return Installed(version, counter, f"/state/releases/sensor/{counter}-{version}")


def test_a_new_release_is_moved_to() -> None:
    plan = choose_updates({"sensor": target("1.1.0", 2)}, {"sensor": installed("1.0.0", 1)}, {})
    assert plan.update == ("sensor",)
    assert plan.removed == ()


def test_the_installed_release_stays_and_settles_an_earlier_failure() -> None:
    plan = choose_updates({"sensor": target("1.0.0", 1)}, {"sensor": installed("1.0.0", 1)}, {"sensor": "2-1.1.0"})
    assert plan.update == ()
    assert plan.failed == {}


def test_a_release_that_failed_here_is_not_tried_again() -> None:
    plan = choose_updates({"sensor": target("1.1.0", 2)}, {"sensor": installed("1.0.0", 1)}, {"sensor": "2-1.1.0"})
    assert plan.update == ()
    assert plan.staying == ("sensor",)
    assert plan.failed == {"sensor": "2-1.1.0"}


def test_an_operator_retry_tries_it_again() -> None:
    plan = choose_updates(
        {"sensor": target("1.1.0", 2, retry=1)}, {"sensor": installed("1.0.0", 1)}, {"sensor": "2-1.1.0"}
    )
    assert plan.update == ("sensor",)
    assert plan.failed == {}


def test_apps_no_longer_assigned_go_and_their_failures_are_forgotten() -> None:
    plan = choose_updates({}, {"sensor": installed("1.0.0", 1)}, {"sensor": "2-1.1.0"})
    assert plan.removed == ("sensor",)
    assert plan.failed == {}


def test_several_apps_are_moved_in_name_order() -> None:
    plan = choose_updates({"web": target("1.0.0", 1, app="web"), "api": target("2.0.0", 4, app="api")}, {}, {})
    assert plan.update == ("api", "web")
