"""The simulation's start: the process's collector is paced before the devices run."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.sim import fleet
from edgefleet.sim.settings import SimSettings


def test_the_simulator_paces_its_collector_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(fleet, "pace_collector", lambda: calls.append("paced"))
    monkeypatch.setattr(fleet, "limit_tls_read_buffers", lambda: True)  # nor this, in the test run's process

    async def run(self: fleet.Simulation, stop: Any) -> dict[str, Any]:
        calls.append("ran")
        return {}

    monkeypatch.setattr(fleet.Simulation, "run", run)
    settings = SimSettings(hub_url="https://hub:8443", token="efe_x", devices=1)
    assert fleet.simulate(settings, out=lambda line: None) == {}
    assert calls == ["paced", "ran"]
