"""The health verdict: fail fast on exits, restarts and unhealthy; pass only when the window is over."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.health import ServiceHealth, verdict


def svc(name: str, state: str = "running", health: str | None = None, restarts: int = 0, code: int | None = None):
    return ServiceHealth(name, state, health, restarts, code)


@pytest.mark.parametrize(
    ("services", "window_over", "expected"),
    [
        ([svc("a"), svc("b", health="healthy")], False, ("pending", None)),
        ([svc("a"), svc("b", health="healthy")], True, ("healthy", None)),
        ([svc("a"), svc("b", health="starting")], True, ("failed", "b")),
        ([svc("a", state="exited", code=3)], False, ("failed", "a")),
        ([svc("a", restarts=6)], False, ("failed", "a")),
        ([svc("a", restarts=5)], True, ("healthy", None)),
        ([svc("a", health="unhealthy")], False, ("failed", "a")),
        ([svc("a", state="created")], True, ("failed", "a")),
    ],
)
def test_table(services: list[ServiceHealth], window_over: bool, expected: tuple[str, str | None]) -> None:
    result = verdict(services, restart_limit=5, window_over=window_over)
    assert (result.outcome, result.service) == expected
    assert (result.reason is None) == (result.outcome != "failed")


def test_reasons_say_what_happened() -> None:
    assert (
        verdict([svc("a", state="exited", code=3)], restart_limit=5, window_over=False).reason == "exited with code 3"
    )
    late = verdict([svc("a", health="starting")], restart_limit=5, window_over=True)
    assert late.reason == "not healthy by the end of the health window (starting)"
    # Docker shows a crashed service between its restarts as "restarting": said as the crash it is.
    crashing = verdict([svc("a", state="restarting", restarts=3, code=4)], restart_limit=5, window_over=True)
    assert crashing.reason == "exited with code 4 and was restarting at the end of the health window (3 restarts)"
    assert verdict([svc("a", state="restarting", restarts=3, code=4)], restart_limit=5, window_over=False).outcome == (
        "pending"
    )


STATES = st.sampled_from(["running", "created", "restarting", "exited"])
HEALTH = st.sampled_from([None, "healthy", "starting", "unhealthy"])


@given(st.lists(st.builds(svc, st.sampled_from("abcd"), STATES, HEALTH, st.integers(0, 8)), max_size=4), st.booleans())
def test_healthy_only_when_every_service_runs_healthy_after_the_window(
    services: list[ServiceHealth], over: bool
) -> None:
    result = verdict(services, restart_limit=5, window_over=over)
    all_good = all(s.state == "running" and s.health in (None, "healthy") and s.restarts <= 5 for s in services)
    assert (result.outcome == "healthy") == (over and all_good)
    if not over and any(s.state == "exited" or s.health == "unhealthy" or s.restarts > 5 for s in services):
        assert result.outcome == "failed"
