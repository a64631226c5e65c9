"""What the simulation counts, and the one-line and JSON summaries made of it (the arithmetic is pure)."""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

LATENCY_SAMPLES = 10_000
"""Latest request durations kept per kind of request (for percentiles)."""
DeviceState = Literal["enrolling", "waiting", "online", "offline", "backoff", "stopped"]
STATES: tuple[DeviceState, ...] = ("enrolling", "waiting", "online", "offline", "backoff", "stopped")
Step = Literal["delivering", "polling", "verifying", "switching", "reporting"]
STEPS: tuple[Step, ...] = ("delivering", "polling", "verifying", "switching", "reporting")
"""Where an online device's cycle is (`SimDevice.cycle`): what a stalled simulation waits on."""
NOTHING = "(nothing)"
"""How devices that run no release yet are counted per release."""


@dataclass
class Counters:
    """Running totals of the whole simulation (one event loop writes them)."""

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, deque[float]] = field(default_factory=dict)
    jobs: dict[str, deque[float]] = field(default_factory=dict)
    """Wall time of worker jobs (verify, enroll) by kind, waiting for a worker included."""
    committed: int = 0
    failed: int = 0
    refused: int = 0
    enrolled: int = 0
    jobs_waiting: int = 0
    """Worker jobs waiting for a free slot in the pool now (`sim.pool.WorkPool`)."""
    jobs_running: int = 0
    """Worker jobs holding a slot now: in a worker process, or next in line for one."""

    def request(self, kind: str, seconds: float) -> None:
        self.requests[kind] += 1
        self.latencies.setdefault(kind, deque(maxlen=LATENCY_SAMPLES)).append(seconds)

    def error(self, kind: str) -> None:
        self.requests[kind] += 1
        self.errors[kind] += 1

    def job(self, kind: str, seconds: float) -> None:
        self.jobs.setdefault(kind, deque(maxlen=LATENCY_SAMPLES)).append(seconds)


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One device as a summary sees it."""

    state: DeviceState
    updating: bool
    running: Mapping[str, str]
    """App -> version it runs."""
    step: Step | None = None
    """Where its cycle is, if it is in one."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The simulation at one moment."""

    elapsed: float
    devices: int
    states: Mapping[str, int]
    updating: int
    releases: Mapping[str, int]
    """"app@version" (or NOTHING) -> devices running it."""
    committed: int
    failed: int
    refused: int
    requests: int
    errors: int
    steps: Mapping[str, int] = field(default_factory=dict)
    """Step -> devices whose cycle is there."""
    jobs_waiting: int = 0
    jobs_running: int = 0


def snapshot(elapsed: float, devices: Iterable[DeviceView], counters: Counters) -> Snapshot:
    """Count the devices by state and by running release (pure, given the views)."""
    states: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    releases: Counter[str] = Counter()
    updating = total = 0
    for view in devices:
        total += 1
        states[view.state] += 1
        if view.step is not None:
            steps[view.step] += 1
        updating += view.updating
        if not view.running:
            releases[NOTHING] += 1
        for app, version in view.running.items():
            releases[f"{app}@{version}"] += 1
    return Snapshot(
        elapsed=elapsed,
        devices=total,
        states={state: states[state] for state in STATES},
        updating=updating,
        releases=dict(sorted(releases.items())),
        committed=counters.committed,
        failed=counters.failed,
        refused=counters.refused,
        requests=sum(counters.requests.values()),
        errors=sum(counters.errors.values()),
        steps={step: steps[step] for step in STEPS},
        jobs_waiting=counters.jobs_waiting,
        jobs_running=counters.jobs_running,
    )


def rate(now: Snapshot, before: Snapshot | None) -> float:
    """Requests per second since `before` (since the start without one)."""
    start_requests, start_time = (before.requests, before.elapsed) if before else (0, 0.0)
    seconds = now.elapsed - start_time
    return (now.requests - start_requests) / seconds if seconds > 0 else 0.0


def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def summary_line(now: Snapshot, before: Snapshot | None = None) -> str:
    """One line: devices by state, updates, devices per release, request rate and errors, where cycles are."""
    states = " ".join(f"{state} {now.states[state]}" for state in STATES if now.states.get(state))
    releases = ", ".join(f"{release} {count}" for release, count in now.releases.items()) or "-"
    steps = " ".join(f"{step} {now.steps[step]}" for step in STEPS if now.steps.get(step)) or "-"
    return (
        f"[sim {clock(now.elapsed)}] {now.devices} devices: {states} | updating {now.updating} | {releases} | "
        f"committed {now.committed} failed {now.failed} refused {now.refused} | "
        f"requests {now.requests} ({rate(now, before):.1f}/s) errors {now.errors} | "
        f"cycles: {steps}; worker jobs waiting {now.jobs_waiting} running {now.jobs_running}"
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) by nearest rank; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(latencies: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float | None]]:
    """Per kind of request: p50, p95 and max in milliseconds, over the kept samples."""
    result: dict[str, dict[str, float | None]] = {}
    for kind, values in sorted(latencies.items()):
        samples = list(values)
        result[kind] = {
            "p50_ms": _ms(percentile(samples, 50)),
            "p95_ms": _ms(percentile(samples, 95)),
            "max_ms": _ms(max(samples, default=None)),
        }
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def summary_json(now: Snapshot, counters: Counters, *, cpu_seconds: Mapping[str, float]) -> dict[str, Any]:
    """The whole run, for benchmarks: it says it is a simulator."""
    return {
        "simulator": "edgefleet sim (simulated devices for load tests and demos)",
        "elapsed_s": round(now.elapsed, 1),
        "devices": now.devices,
        "enrolled": counters.enrolled,
        "states": dict(now.states),
        "updating": now.updating,
        "steps": dict(now.steps),
        "jobs_waiting": now.jobs_waiting,
        "jobs_running": now.jobs_running,
        "releases": dict(now.releases),
        "committed": now.committed,
        "failed": now.failed,
        "refused": now.refused,
        "requests": dict(sorted(counters.requests.items())),
        "errors": dict(sorted(counters.errors.items())),
        "requests_per_s": round(rate(now, None), 2),
        "latency": latency_summary(counters.latencies),
        "jobs": latency_summary(counters.jobs),
        "cpu_s": {process: round(seconds, 1) for process, seconds in cpu_seconds.items()},
    }
