"""Summary arithmetic: devices by state and release, request rates, percentiles, the JSON says it is a simulator."""

from __future__ import annotations

import pytest

from edgefleet.sim.stats import (
    NOTHING,
    Counters,
    DeviceView,
    latency_summary,
    percentile,
    rate,
    snapshot,
    summary_json,
    summary_line,
)


def views() -> list[DeviceView]:
    return [
        DeviceView("online", updating=False, running={"sensor": "1.1.0"}, step="polling"),
        DeviceView("online", updating=True, running={"sensor": "1.0.0", "web": "2.0.0"}, step="switching"),
        DeviceView("offline", updating=False, running={"sensor": "1.1.0"}),
        DeviceView("enrolling", updating=False, running={}),
    ]


def test_a_snapshot_counts_devices_by_state_and_release() -> None:
    counters = Counters(committed=3, failed=1)
    counters.request("poll", 0.5)
    counters.request("report", 0.01)
    counters.error("report")
    now = snapshot(30.0, views(), counters)
    assert now.devices == 4
    assert now.states == {"enrolling": 1, "waiting": 0, "online": 2, "offline": 1, "backoff": 0, "stopped": 0}
    assert now.updating == 1
    assert now.releases == {NOTHING: 1, "sensor@1.0.0": 1, "sensor@1.1.0": 2, "web@2.0.0": 1}
    assert (now.requests, now.errors, now.committed, now.failed) == (3, 1, 3, 1)
    assert now.steps == {"delivering": 0, "polling": 1, "verifying": 0, "switching": 1, "reporting": 0}


def test_the_rate_is_per_second_since_the_last_summary() -> None:
    counters = Counters()
    for _ in range(100):
        counters.request("poll", 0.1)
    before = snapshot(10.0, [], counters)
    for _ in range(50):
        counters.request("poll", 0.1)
    now = snapshot(20.0, [], counters)
    assert rate(before, None) == pytest.approx(10.0)
    assert rate(now, before) == pytest.approx(5.0)
    assert rate(snapshot(0.0, [], Counters()), None) == 0.0


def test_the_summary_line_says_it_all_in_one_line() -> None:
    counters = Counters(committed=3, failed=1, refused=2, jobs_waiting=7, jobs_running=4)
    line = summary_line(snapshot(3725.0, views(), counters))
    assert line.endswith("| cycles: polling 1 switching 1; worker jobs waiting 7 running 4")
    assert line.startswith("[sim 1:02:05] 4 devices: enrolling 1 online 2 offline 1 | updating 1 |")
    assert "(nothing) 1, sensor@1.0.0 1, sensor@1.1.0 2, web@2.0.0 1" in line
    assert "committed 3 failed 1 refused 2" in line
    assert "\n" not in line


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 50) == 3.0
    assert percentile([], 50) is None
    assert latency_summary({"report": [0.010, 0.020, 0.030]}) == {
        "report": {"p50_ms": 20.0, "p95_ms": 30.0, "max_ms": 30.0}
    }


def test_latency_samples_are_bounded() -> None:
    counters = Counters()
    for _ in range(20_000):
        counters.request("poll", 1.0)
    assert counters.requests["poll"] == 20_000
    assert len(counters.latencies["poll"]) == 10_000


def test_the_json_summary_says_it_is_a_simulator() -> None:
    counters = Counters(committed=2, enrolled=4)
    counters.request("poll", 1.0)
    counters.job("verify", 0.2)
    summary = summary_json(snapshot(10.0, views(), counters), counters, cpu_seconds={"simulator": 1.23})
    assert "simulat" in summary["simulator"]
    assert summary["devices"] == 4
    assert summary["enrolled"] == 4
    assert summary["committed"] == 2
    assert summary["requests"] == {"poll": 1}
    assert summary["requests_per_s"] == 0.1
    assert summary["jobs"]["verify"]["p50_ms"] == 200.0
    assert summary["cpu_s"] == {"simulator": 1.2}
    assert summary["steps"]["polling"] == 1
