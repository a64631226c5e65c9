"""The collector's pacing: rarer collections, what exists frozen out; and the simulator paces its own."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from edgefleet.collector import MIDDLE, OLD, YOUNG
from edgefleet.sim import fleet
from edgefleet.sim.settings import SimSettings

PROBE = """
import gc, json
from edgefleet.collector import pace_collector
before = gc.get_threshold()
pace_collector()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "enabled": gc.isenabled()}))
"""


def test_pacing_raises_the_thresholds_and_freezes_what_exists() -> None:
    # In a process of its own: the pacing is for the whole process, not for the test run's.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    found = json.loads(out.stdout)
    assert found["before"] == [700, 10, 10]
    assert found["after"] == [YOUNG, MIDDLE, OLD]
    assert found["frozen"] > 1000  # the modules' objects
    assert found["enabled"] is True  # cycles are still collected


def test_the_simulator_paces_its_collector_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(fleet, "pace_collector", lambda: calls.append("paced"))
    monkeypatch.setattr(fleet, "limit_tls_read_buffers", lambda: True)  # nor this, in the test run's process

    def run(main: Any) -> dict[str, Any]:
        main.close()
        calls.append("ran")
        return {}

    monkeypatch.setattr(fleet.asyncio, "run", run)
    settings = SimSettings(hub_url="https://hub:8443", token="efe_x", devices=1)
    assert fleet.simulate(settings, out=lambda line: None) == {}
    assert calls == ["paced", "ran"]
