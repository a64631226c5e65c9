"""The scheduler thread's pace: passes while a deployment is active, rarely while none is, slower after slow passes."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from edgefleet.hub import scheduler
from edgefleet.hub.errors import HubConfigError


class Fake:
    def __init__(self, *, active: bool, took: float = 0.0, fail: Exception | None = None) -> None:
        self.is_active, self.took, self.fail = active, took, fail
        self.ticks: list[float] = []

    def active(self, _hub: Any) -> bool:
        return self.is_active

    def tick(self, _hub: Any) -> int:
        self.ticks.append(time.monotonic())
        if self.fail is not None:
            raise self.fail
        time.sleep(self.took)
        return 0


def run(monkeypatch: pytest.MonkeyPatch, fake: Fake, seconds: float, interval: float = 0.02) -> Fake:
    monkeypatch.setattr(scheduler, "rollouts", fake)
    hub = SimpleNamespace(settings=SimpleNamespace(rollout_interval_seconds=interval))
    thread = scheduler.Scheduler(hub)  # type: ignore[arg-type]
    thread.start()
    time.sleep(seconds)
    thread.stop()
    return fake


def test_passes_follow_the_interval_while_a_deployment_is_active(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = run(monkeypatch, Fake(active=True), 0.5)
    assert 10 <= len(fake.ticks) <= 26


def test_one_pass_per_idle_period_while_none_is_active(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = run(monkeypatch, Fake(active=False), 0.5)
    assert len(fake.ticks) == 1  # the first, then the next after IDLE_SECONDS


def test_slow_passes_are_spaced_by_four_times_their_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = run(monkeypatch, Fake(active=True, took=0.1), 1.2)
    gaps = [b - a for a, b in zip(fake.ticks, fake.ticks[1:], strict=False)]
    assert gaps
    assert min(gaps) >= 0.1 + scheduler.COST_FACTOR * 0.1 - 0.02


@pytest.mark.parametrize("error", [HubConfigError("database_unavailable", "down"), RuntimeError("bug")])
def test_a_failing_pass_does_not_stop_the_scheduler(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    fake = run(monkeypatch, Fake(active=True, fail=error), 0.3)
    assert len(fake.ticks) >= 5
