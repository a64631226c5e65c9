"""Benchmark (issue 6): one hub process serving N simulated devices, on SQLite and on PostgreSQL.

For each database and N, on a fresh hub (`edgefleet hub init` and `edgefleet hub serve`, TLS,
as users run it; PostgreSQL in a database of its own, dropped afterwards):

1. enroll N devices with `edgefleet sim` (`--state-dir`, one simulator process for the whole case);
2. rollout A: `deploy create sensor@1.0.0 --waves 10%,100% --bake 0` to every device (first install);
3. steady state: devices long-poll (60 s, the hub's cap set to 60 s) and report every 60 s; after a
   warm-up, the hub's Prometheus `/metrics` and /proc are read before and after a window:
   requests/s, hub-side latency of the requests the hub does not hold (every route but the
   long-poll `/device/target`; quantiles from the histogram's bucket deltas), non-2xx/304
   answers, the simulator's errors (transport errors and answers >= 400), hub RSS, and CPU
   seconds of the hub, the simulator (with its workers), PostgreSQL and everything else;
4. (the largest N of each database) a py-spy profile of the hub (the thread holding the GIL) in steady
   state, and another during the rollout;
5. rollout B: `deploy create sensor@1.1.0 --waves 10%,100% --bake 0 --priority 1` (an update):
   time until the deployment is completed with every device updated; from the hub's database,
   first `fetched_at` - deployment `created_at` and `fetched_at` - `assigned_at` per device (the
   device fetched its new director metadata, i.e. began its download); and from observers in
   this process (devices of the fleet long-polling beside the simulator) `answer - assigned_at`:
   how fast the hub's answer reaches a held poll, without the simulator's verification queue;
6. (the smallest N of each database, simulator stopped) the ceiling: a closed-loop load generator
   (bench/fleet_load.py) against a minimal ASGI app on the same server stack
   (bench/ceiling_app.py) and against the hub (`/healthz`, and the signed `GET /device/target`).

The shape of a case (issue 16 point 5): `--hub-workers N` serves with `hub serve --workers N`
(CPU and memory are then read over the supervisor and its workers; memory as RSS and as PSS,
which counts pages the processes share once); `--sims K` splits the devices over K simulator
processes (each holds one connection per device, and a process may hold 20,000 descriptors),
part i's devices tagged `part=i`; `--rollout-parts P` rolls out to the first P parts only;
`--waves` sets the waves, `--max-pending` paces the rollouts. The hub's memory is read every
`--memory-every` seconds through the steady window (growth: median of its last fifth minus its
first), and a projection of the CPU a 1M-device fleet at the same cadence would need is printed
from the window's figures.

    .venv/bin/python bench/fleet_scale.py --devices 20000 --db postgres --quiet-enrollment --hub-workers 2 \
        --sims 2 --rollout-parts 1 --waves 1%,10%,100% --window 1800 --rollout-timeout 900

With `--quiet-enrollment` the devices enroll while reporting hourly (enrolling then does not compete
with the fleet's own traffic), and a second simulator takes them over for the measurements. py-spy
is a bench-only tool (`.venv/bin/pip install py-spy`); without it the profiles are skipped. Prints a
table and writes JSON (`--out`). Copy the figures into docs/benchmarks.md.

    .venv/bin/python bench/fleet_scale.py --devices 1000,5000,10000 --db sqlite,postgres [--quick]
    .venv/bin/python bench/fleet_scale.py --summarise-profile RAW   # a py-spy raw file, summarised
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select

from edgefleet.agent.client import target_call
from edgefleet.agent.identity import load_identity
from edgefleet.hub.db.models import DeploymentMemberRow, DeploymentRow

BENCH = Path(__file__).resolve().parent
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
LONG_POLL = 60.0
REPORT_INTERVAL = 60.0
MAX_CONCURRENT = 50_000
WAVES = "10%,100%"
OBSERVERS = 100
HELD_ROUTES = ("/device/target", "/device/self")
"""Routes whose requests the hub holds (long-poll): their durations are waits, not latency.
(The metrics label routes by their template within the router, without the /api/v1 prefix.)"""
OWN_ROUTES = ("/metrics",)
LOAD_LIMIT = 1.5
COMPOSE = """
services:
  main:
    image: registry.example/acme/sensor@sha256:{digest}
    restart: unless-stopped
x-edgefleet:
  app: sensor
  version: {version}
  architectures: [amd64, arm64]
  services:
    main:
      resources: {{memory: 64m, cpus: 0.5, pids: 64}}
"""


@dataclass(frozen=True)
class Plan:
    """Durations of one run (seconds); `--quick` shortens them for a smoke run."""

    warmup: float
    window: float
    profile: float
    rollout_timeout: float
    ceiling: float
    download_time: float = 1.0
    start_time: float = 1.0
    waves: str = WAVES
    memory_every: float = 30.0
    """Seconds between readings of the hub's memory during the steady window."""
    verified_timeout: float = 1800.0
    """Seconds the first verifications after the simulators' takeover may take at most."""
    sim_workers: int | None = None
    """Each simulator's verification worker processes (`edgefleet sim --workers`; None: its default)."""
    max_pending: int | None = None
    """The rollouts' pace (`deploy create --max-pending`; None: each wave at once)."""


# --- processes, /proc ----------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run the edgefleet CLI as a user would; its stdout, or SystemExit with its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"edgefleet {' '.join(args[:3])} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: pages shared between a hub's processes count once in their sum."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in tree(pid))


def tree_memory(pid: int) -> tuple[int, int]:
    """RSS and PSS of `pid` and its descendants, each summed (a hub of N workers is N + 1 processes)."""
    pids = tree(pid)
    return sum(rss_bytes(p) for p in pids), sum(pss_bytes(p) for p in pids)


POSTGRES_AUXILIARY = ("checkpointer", "background writer", "walwriter", "autovacuum", "logical replication")


def postgres_cpu(database: str | None) -> dict[int, float]:
    """CPU seconds per PostgreSQL process serving `database`, and of the server's own background processes."""
    found: dict[int, float] = {}
    if database is None:
        return found
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                command = (entry / "cmdline").read_bytes().decode(errors="replace")
                if command.startswith("postgres:") and (
                    f" {database} " in command or any(a in command for a in POSTGRES_AUXILIARY)
                ):
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


def grown(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the processes used between two readings (those gone meanwhile lost with them)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def quiet_enough(what: str) -> dict[str, Any]:
    """Load averages before a run; above LOAD_LIMIT, wait 30 s and look once more."""
    first = loadavg()
    seen: dict[str, Any] = {"load": first}
    if first[0] > LOAD_LIMIT:
        print(f"  {what}: 1-min load {first[0]} > {LOAD_LIMIT}, waiting 30 s", flush=True)
        time.sleep(30)
        seen["load_after_wait"] = loadavg()
    return seen


def stop(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the hub -------------------------------------------------------------------------------


@dataclass
class Hub:
    url: str
    ca: Path
    token: str
    data_dir: Path
    database_url: str | None
    process: subprocess.Popen[str]
    workers: int = 1
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca))
        self.http = httpx.Client(
            base_url=self.url, verify=context, timeout=120, headers={"Authorization": f"Bearer {self.token}"}
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def cli(self, *args: str) -> str:
        return cli(*args, env={"EDGEFLEET_HUB": self.url, "EDGEFLEET_CA": str(self.ca), "EDGEFLEET_TOKEN": self.token})

    @property
    def database_name(self) -> str | None:
        return self.database_url.rsplit("/", 1)[1] if self.database_url else None

    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return "postgresql+psycopg://" + self.database_url.split("://", 1)[1]
        return f"sqlite:///{self.data_dir / 'hub.db'}"


@contextmanager
def fresh_postgres() -> Iterator[str]:
    name = f"fleetscale_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_hub(scratch: Path, database_url: str | None, workers: int = 1) -> Iterator[Hub]:
    """`hub init` and `hub serve` (long-polls up to 60 s, concurrency limit MAX_CONCURRENT), until the block ends.

    With `workers` > 1 (PostgreSQL), `hub serve --workers N`: one supervising process (migrations,
    the rollout scheduler) and N serving processes; CPU and memory are read over all of them.
    """
    data_dir = scratch / "hub"
    db_args = ["--database-url", database_url] if database_url else []
    init = cli("hub", "init", "--data-dir", str(data_dir), "--hostname", "hub.test", *db_args)
    token = next(line.split()[-1] for line in init.splitlines() if line.startswith("admin token:"))
    port = free_port()
    env = {
        **os.environ,
        "EDGEFLEET_LONG_POLL_MAX_SECONDS": str(LONG_POLL),
        "EDGEFLEET_MAX_CONCURRENT_REQUESTS": str(MAX_CONCURRENT),
    }
    log = (scratch / "hub.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgefleet.cli.main",
            "hub",
            "serve",
            "--data-dir",
            str(data_dir),
            "--bind",
            f"127.0.0.1:{port}",
            *db_args,
            "--workers",
            str(workers),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    hub = Hub(f"https://127.0.0.1:{port}", data_dir / "ca.crt", token, data_dir, database_url, process, workers)
    try:
        wait_ready(hub.url, hub.ca, process, scratch / "hub.log")
        yield hub
    finally:
        hub.http.close()
        stop(process)
        log.close()


def wait_ready(url: str, ca: Path, process: subprocess.Popen[str], log: Path, path: str = "/healthz") -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 60
    while True:
        with suppress(httpx.HTTPError):
            if httpx.get(f"{url}{path}", verify=context, timeout=2).status_code == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{url} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def running_bare_app(hub: Hub, scratch: Path) -> Iterator[tuple[str, int]]:
    """bench/ceiling_app.py on the hub's server stack and settings, until the block ends: (its URL, its pid)."""
    port = free_port()
    app = subprocess.Popen(
        [
            *(sys.executable, str(BENCH / "ceiling_app.py")),
            *("--data-dir", str(hub.data_dir), "--bind", f"127.0.0.1:{port}"),
            *("--long-poll-max-seconds", str(LONG_POLL), "--max-concurrent", str(MAX_CONCURRENT)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"https://127.0.0.1:{port}"
        wait_ready(url, hub.ca, app, scratch / "hub.log", path="/")
        yield url, app.pid
    finally:
        stop(app)


def closed_loop(hub: Hub, url: str, pid: int, seconds: float, *extra: str, warmup: float = 3) -> Any:
    """bench/fleet_load.py against `url` (the server's CPU read from `pid`): its figures, or {"error": ...}."""
    command = [
        *(sys.executable, str(BENCH / "fleet_load.py"), "--url", url, "--ca", str(hub.ca)),
        *("--seconds", str(seconds), "--warmup", str(warmup), "--server-pid", str(pid), *extra),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr[-1500:]}
    return json.loads(out.stdout)


def publish(hub: Hub, scratch: Path) -> None:
    """Two releases of `sensor` (1.0.0 and 1.1.0), built, signed and pushed with the CLI."""
    keys = scratch / "keys"
    cli("keys", "init", "--dir", str(keys))
    hub.cli("repo", "init", "--keys", str(keys))
    for version in ("1.0.0", "1.1.0"):
        app = scratch / f"app-{version}"
        app.mkdir()
        (app / "compose.yaml").write_text(COMPOSE.format(digest="a" * 64, version=version))
        build = scratch / f"build-{version}"
        cli("release", "build", str(app), "--out", str(build))
        cli("release", "sign", str(build), "--keys", str(keys))
        hub.cli("release", "push", str(build))


# --- /metrics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """What the hub's /metrics and /proc said at one moment."""

    at: float
    requests: dict[tuple[str, str, str], float]
    """(method, route, status) -> count."""
    buckets: dict[tuple[str, str, float], float]
    """(method, route, le) -> cumulative count."""
    pauses: dict[tuple[str, str], float]
    """The collector's pauses over the hub's processes: (generation, "count" | "sum" | "cpu" | bucket le) -> value."""
    hub_cpu: float
    hub_rss: int
    hub_pss: int
    sim_cpu: float
    postgres_cpu: dict[int, float]
    machine_cpu: float
    sim: dict[str, Any]


def sample(hub: Hub, sim: Sims | None) -> Sample:
    text = hub.http.get("/metrics").text
    requests: dict[tuple[str, str, str], float] = {}
    buckets: dict[tuple[str, str, float], float] = {}
    pauses: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if s.name == "edgefleet_http_requests_total":
                requests[labels["method"], labels["route"], labels["status"]] = s.value
            elif s.name == "edgefleet_http_request_seconds_bucket":
                buckets[labels["method"], labels["route"], float(labels["le"])] = s.value
            elif s.name == "edgefleet_gc_pause_cpu_seconds_total":
                pauses[labels["generation"], "cpu"] = s.value
            elif s.name.startswith("edgefleet_gc_pause_seconds_"):
                part = s.name.removeprefix("edgefleet_gc_pause_seconds_")
                pauses[labels["generation"], labels["le"] if part == "bucket" else part] = s.value
    rss, pss = tree_memory(hub.pid)
    return Sample(
        at=time.monotonic(),
        requests=requests,
        buckets=buckets,
        pauses=pauses,
        hub_cpu=tree_cpu(hub.pid),
        hub_rss=rss,
        hub_pss=pss,
        sim_cpu=sim.cpu() if sim else 0.0,
        postgres_cpu=postgres_cpu(hub.database_name),
        machine_cpu=machine_cpu(),
        sim=sim.progress() if sim else {},
    )


def histogram_quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """Quantile `q` (0-1) from (upper bound, cumulative count) pairs, interpolated within its bucket (as Prometheus)."""
    total = cumulative[-1][1] if cumulative else 0
    if not total:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is all that is known
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_bound, lower_count = bound, count
    return lower_bound


def pause_figures(before: Sample, after: Sample) -> dict[str, Any]:
    """The collector's pauses between two samples, per generation: how many, seconds in all, p99 and longest."""
    seconds = after.at - before.at
    figures: dict[str, Any] = {}
    for generation in sorted({g for g, _ in after.pauses}):

        def grew(part: str, g: str = generation) -> float:
            return after.pauses.get((g, part), 0.0) - before.pauses.get((g, part), 0.0)

        count = grew("count")
        cumulative = sorted(
            (float(le), grew(le))
            for g, le in after.pauses
            if g == generation and le not in ("count", "sum", "cpu", "created")
        )
        longest = next((le for le, c in cumulative if c >= count), None) if count else None
        p99 = histogram_quantile(cumulative, 0.99)
        figures[generation] = {
            "count": int(count),
            "per_minute": round(count / seconds * 60, 1),
            "seconds": round(grew("sum"), 2),
            "share_of_time": round(grew("sum") / seconds, 4),
            "cpu_seconds": round(grew("cpu"), 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 1),
            "longest_under_s": longest,
        }
    return figures


def window_figures(before: Sample, after: Sample) -> dict[str, Any]:
    """Rates, latency and costs between two samples."""
    seconds = after.at - before.at
    delta = Counter({k: v - before.requests.get(k, 0) for k, v in after.requests.items()})
    served = {k: v for k, v in delta.items() if k[1] not in OWN_ROUTES and v}
    total = sum(served.values())
    bad = sum(v for (_, route, status), v in served.items() if not _expected(route, status))
    statuses: Counter[str] = Counter()
    for (method, route, status), count in served.items():
        if not (status.startswith("2") or status == "304"):
            statuses[f"{status} {method} {route}"] += int(count)
    by_route: Counter[str] = Counter()
    for (method, route, _), count in served.items():
        by_route[f"{method} {route}"] += int(count)
    merged: dict[float, float] = {}
    per_route: dict[str, dict[float, float]] = {}
    for (method, route, le), v in after.buckets.items():
        if not route.endswith(HELD_ROUTES) and route not in OWN_ROUTES:
            grew = v - before.buckets.get((method, route, le), 0.0)
            merged[le] = merged.get(le, 0.0) + grew
            mine = per_route.setdefault(f"{method} {route}", {})
            mine[le] = mine.get(le, 0.0) + grew
    cumulative = sorted(merged.items())
    quick = cumulative[-1][1] if cumulative else 0
    hub_cpu = after.hub_cpu - before.hub_cpu
    pg_cpu = grown(before.postgres_cpu, after.postgres_cpu)
    sim_errors = after.sim.get("errors", 0) - before.sim.get("errors", 0)
    p50, p99 = histogram_quantile(cumulative, 0.50), histogram_quantile(cumulative, 0.99)
    return {
        "seconds": round(seconds, 1),
        "requests": int(total),
        "requests_per_s": round(total / seconds, 1),
        "by_route": {k: int(v) for k, v in by_route.most_common()},
        "latency_requests": int(quick),
        "p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "p99_ms": None if p99 is None else round(p99 * 1000, 1),
        "within_50ms": round(_within(cumulative, 0.05), 4) if quick else None,
        "non_held_by_route": route_latency(per_route),
        "hub_errors": int(bad),
        "hub_other_statuses": dict(statuses),
        "sim_errors": int(sim_errors),
        "gc_pauses": pause_figures(before, after),
        "hub_rss_mib": round(after.hub_rss / 2**20, 1),
        "hub_pss_mib": round(after.hub_pss / 2**20, 1),
        "hub_cpu_s": round(hub_cpu, 1),
        "hub_cpu_share": round(hub_cpu / seconds, 3),
        "hub_cpu_s_per_1k": round(hub_cpu / total * 1000, 2) if total else None,
        "sim_cpu_share": round((after.sim_cpu - before.sim_cpu) / seconds, 3),
        "postgres_cpu_share": round(pg_cpu / seconds, 3),
        "other_cpu_share": round(
            ((after.machine_cpu - before.machine_cpu) - hub_cpu - (after.sim_cpu - before.sim_cpu) - pg_cpu) / seconds,
            3,
        ),
    }


def route_latency(per_route: dict[str, dict[float, float]]) -> dict[str, dict[str, Any]]:
    """Per non-held route, busiest first: requests, p50 and p99 (ms), and the share within 50 ms."""
    figures = {}
    for route, buckets in per_route.items():
        cumulative = sorted(buckets.items())
        count = cumulative[-1][1] if cumulative else 0
        if not count:
            continue
        p50, p99 = histogram_quantile(cumulative, 0.50), histogram_quantile(cumulative, 0.99)
        figures[route] = {
            "requests": int(count),
            "p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "p99_ms": None if p99 is None else round(p99 * 1000, 1),
            "within_50ms": round(_within(cumulative, 0.05), 4),
        }
    return dict(sorted(figures.items(), key=lambda item: -item[1]["requests"]))


def _expected(route: str, status: str) -> bool:
    """2xx, 304, and the 404 a TUF client gets when it asks for the next root version (there is none)."""
    return status.startswith("2") or status == "304" or (status == "404" and route.startswith("/tuf/"))


def _within(cumulative: list[tuple[float, float]], bound: float) -> float:
    """Share of requests in buckets up to `bound` (a bucket edge)."""
    total = cumulative[-1][1]
    return next((count for le, count in cumulative if le >= bound), total) / total


# --- the simulator -----------------------------------------------------------------------------

PROGRESS = re.compile(
    r"\[sim (?P<clock>[\d:]+)\] (?P<devices>\d+) devices: (?P<states>[^|]*)\| updating (?P<updating>\d+) \| "
    r"(?P<releases>[^|]*)\| committed (?P<committed>\d+) failed (?P<failed>\d+) refused (?P<refused>\d+) \| "
    r"requests (?P<requests>\d+) \((?P<rate>[\d.]+)/s\) errors (?P<errors>\d+)"
    r"(?: \| cycles: (?P<steps>[^;]*); worker jobs waiting (?P<waiting>\d+) running (?P<running>\d+))?"
)


@dataclass
class Sim:
    """One `edgefleet sim` process for the whole case; its progress lines are read from its stderr file."""

    process: subprocess.Popen[str]
    stdout: Path
    stderr: Path
    state_dir: Path

    @classmethod
    def start(
        cls,
        hub: Hub,
        devices: int,
        token: str,
        scratch: Path,
        plan: Plan,
        *,
        report_interval: float = REPORT_INTERVAL,
        ramp: float = 10,
        name: str = "sim",
        part: int = 0,
    ) -> Sim:
        state_dir = scratch / f"sim-state-{part}"
        stdout, stderr = scratch / f"{name}-{part}.json", scratch / f"{name}-{part}.log"
        flags = {
            "--devices": devices,
            "--hub": hub.url,
            "--ca": hub.ca,
            "--token": token,
            "--state-dir": state_dir,
            "--report-interval": report_interval,
            "--poll-wait": LONG_POLL,
            "--ramp": ramp,
            "--offline": 0,
            "--fail-rate": 0,
            "--seed": 1 + part,
            "--summary-interval": 5,
            "--download-time": plan.download_time,
            "--start-time": plan.start_time,
        }
        if plan.sim_workers is not None:
            flags["--workers"] = plan.sim_workers
        process = subprocess.Popen(
            [sys.executable, "-m", "edgefleet.cli.main", "sim", *(f"{k}={v}" for k, v in flags.items()), "--json"],
            stdout=stdout.open("w"),
            stderr=stderr.open("w"),
            text=True,
        )
        return cls(process, stdout, stderr, state_dir)

    def progress(self) -> dict[str, Any]:
        """The latest progress line, parsed (empty before the first)."""
        latest = None
        with suppress(OSError):
            for line in self.stderr.read_text(errors="replace").splitlines():
                if match := PROGRESS.search(line):
                    latest = match
        if latest is None:
            return {}
        states = {name: int(count) for name, count in re.findall(r"([a-z]+) (\d+)", latest["states"])}
        steps = {name: int(count) for name, count in re.findall(r"([a-z]+) (\d+)", latest["steps"] or "")}
        return {
            "states": states,
            "steps": steps,
            "releases": latest["releases"].strip(),
            "committed": int(latest["committed"]),
            "requests": int(latest["requests"]),
            "errors": int(latest["errors"]),
            "jobs_waiting": int(latest["waiting"] or 0),
        }

    def finish(self) -> dict[str, Any]:
        """Stop it (SIGTERM) and return its JSON summary."""
        stop(self.process, timeout=300)
        with suppress(ValueError, OSError):
            return dict(json.loads(self.stdout.read_text()))
        return {"error": self.stderr.read_text(errors="replace")[-2000:]}


class Sims:
    """The simulator processes of a case (`--sims K`): part i simulates its share of the devices, tagged part=i.

    Each process holds one connection per device, so the 20,000-descriptor limit of a process
    needs several of them for a fleet of 20k; each part has its own state directory and token.
    """

    def __init__(self, members: list[Sim]) -> None:
        self.members = members

    @classmethod
    def start(cls, hub: Hub, shares: list[int], tokens: list[str], scratch: Path, plan: Plan, **options: Any) -> Sims:
        return cls(
            [
                Sim.start(hub, devices, token, scratch, plan, part=part, **options)
                for part, (devices, token) in enumerate(zip(shares, tokens, strict=True))
            ]
        )

    def state_dir(self, part: int = 0) -> Path:
        return self.members[part].state_dir

    def cpu(self) -> float:
        return sum(tree_cpu(m.process.pid) for m in self.members)

    def stopped(self) -> str | None:
        """The log's tail of a member that has stopped, or None while all run."""
        for m in self.members:
            if m.process.poll() is not None:
                return m.stderr.read_text(errors="replace")[-3000:]
        return None

    def progress(self) -> dict[str, Any]:
        """The members' latest progress lines, added up (empty before every member has printed one)."""
        parts = [m.progress() for m in self.members]
        if not all(parts):
            return {}
        states: Counter[str] = Counter()
        steps: Counter[str] = Counter()
        for found in parts:
            states.update(found["states"])
            steps.update(found["steps"])
        return {
            "states": dict(states),
            "steps": dict(steps),
            "releases": "; ".join(found["releases"] for found in parts),
            **{key: sum(found[key] for found in parts) for key in ("committed", "requests", "errors", "jobs_waiting")},
        }

    def finish(self) -> dict[str, Any]:
        """Stop them all; one process's summary, or each member's (brief) under `parts`."""
        summaries = [m.finish() for m in self.members]
        if len(summaries) == 1:
            return _brief(summaries[0])
        return {"parts": [_brief(found) for found in summaries]}


RECONNECT_CAP = 480.0  # seconds the measured simulator may take to bring the enrolled devices back online


def wait_online(hub: Hub, sim: Sims, devices: int, timeout: float) -> dict[str, Any]:
    """Until every device is enrolled and online; the time it took and the hub's CPU meanwhile."""
    start, cpu = time.monotonic(), tree_cpu(hub.pid)
    last = -1
    while time.monotonic() - start < timeout:
        if (tail := sim.stopped()) is not None:
            raise SystemExit(f"the simulator stopped: {tail}")
        online = sim.progress().get("states", {}).get("online", 0)
        if online >= devices:
            break
        if online // 1000 != last // 1000:
            print(f"  enrolled and online: {online}/{devices} after {time.monotonic() - start:.0f} s", flush=True)
            last = online
        time.sleep(2)
    seconds = time.monotonic() - start
    online = sim.progress().get("states", {}).get("online", 0)
    return {"online": online, "seconds": round(seconds, 1), "hub_cpu_s": round(tree_cpu(hub.pid) - cpu, 1)}


def wait_verified(hub: Hub, sim: Sims, devices: int, cap: float) -> dict[str, Any]:
    """Until the first verifications after the takeover are over, at most `cap` seconds.

    A freshly started simulator holds no ETags, so each device's first answer is a 200 that it
    verifies in a worker process: until that queue is drained (no job waiting in any simulator)
    and the hub hears few `/tuf/` requests, the devices are not in their steady cycle.
    """
    start = time.monotonic()

    def tuf_requests() -> float:
        found = sample(hub, None).requests
        return sum(v for (_, route, _), v in found.items() if route.startswith("/tuf/"))

    last = tuf_requests()
    drained = False
    while time.monotonic() - start < cap:
        time.sleep(10)
        now = tuf_requests()
        progress = sim.progress()
        verifying = progress.get("steps", {}).get("verifying", 0)
        drained = progress.get("jobs_waiting", 0) == 0 and verifying <= devices / 1000
        if drained and now - last <= devices / 1000:
            break
        if int(time.monotonic() - start) % 60 < 10:
            print(f"    still verifying: {verifying}, jobs waiting {progress.get('jobs_waiting')}", flush=True)
        last = now
    seconds = time.monotonic() - start
    return {"seconds": round(seconds, 1), "quiet": seconds < cap, "drained": drained}


# --- observers of a rollout ------------------------------------------------------------------


class Observers:
    """Devices of the fleet long-polling their target beside the simulator: when their answer changed.

    Each holds a poll with the ETag it last saw and notes the wall-clock time of the first
    answer that differs after `start`; so `answer - assigned_at` is how long the hub took to
    reach a held poll, without the simulator's verification queue in it.
    """

    def __init__(self, hub: Hub, state_dir: Path, devices: int) -> None:
        dirs = sorted((state_dir / "devices").iterdir())
        step = max(1, len(dirs) // min(OBSERVERS, devices))
        self.identities = [load_identity(d) for d in dirs[::step][:OBSERVERS]]
        self.hub = hub
        self.changed: dict[str, datetime] = {}
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Observers:
        self._thread.start()
        self.ready.wait(60)
        time.sleep(1)  # the held polls are in
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)

    async def _main(self) -> None:
        context = ssl.create_default_context(cafile=str(self.hub.ca))
        limits = httpx.Limits(max_connections=len(self.identities) + 4)
        async with httpx.AsyncClient(base_url=self.hub.url, verify=context, limits=limits, timeout=30) as client:
            etags = await asyncio.gather(*(self._etag(client, i) for i in self.identities))
            self.ready.set()
            tasks = [
                asyncio.create_task(self._watch(client, i, e)) for i, e in zip(self.identities, etags, strict=True)
            ]
            while not self._stop.is_set() and not all(t.done() for t in tasks):
                await asyncio.sleep(0.5)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _etag(self, client: httpx.AsyncClient, identity: Any) -> str | None:
        call = target_call(identity)
        response = await client.request(**call.arguments(now=datetime.now(UTC), timeout=client.timeout))
        found: str | None = response.headers.get("ETag")
        return found

    async def _watch(self, client: httpx.AsyncClient, identity: Any, etag: str | None) -> None:
        while True:
            call = target_call(identity, wait=LONG_POLL, etag=etag)
            try:
                response = await client.request(**call.arguments(now=datetime.now(UTC), timeout=client.timeout))
            except httpx.HTTPError:
                await asyncio.sleep(1)
                continue
            if response.status_code == 200 and response.headers.get("ETag") != etag:
                self.changed[identity.device_id] = datetime.now(UTC)
                return
            if response.status_code != 304:
                await asyncio.sleep(1)


# --- rollouts --------------------------------------------------------------------------------


def rollout(
    hub: Hub,
    sim: Sims,
    plan: Plan,
    *,
    name: str,
    release: str,
    target: str,
    devices: int,
    priority: int,
    spy: Profile | None = None,
) -> dict[str, Any]:
    """`deploy create` with the plan's waves and no bake; until completed with every device updated (or the timeout).

    `target` selects `devices` devices, among them those of the first simulator part (the observers').
    """
    timeout = plan.rollout_timeout
    before = sample(hub, sim)
    if spy:
        spy.start()
    with Observers(hub, sim.state_dir(0), devices) as observers:
        started_wall = datetime.now(UTC)
        start = time.monotonic()
        hub.cli(
            "deploy", "create", "--release", release, "--name", name, "--target", target,
            "--waves", plan.waves, "--bake", "0", "--priority", str(priority),
            *(["--max-pending", str(plan.max_pending)] if plan.max_pending else []),
        )  # fmt: skip
        created = time.monotonic() - start
        status: dict[str, Any] = {}
        wave_started: dict[int, float] = {}
        next_note = start + 60
        while time.monotonic() - start < timeout:
            # Asked as a live view asks (`deploy status --watch`, the dashboard): a shared status will do.
            status = hub.http.get(f"/api/v1/deployments/{name}", params={"max_age": 1}).json()
            wave_started.setdefault(status["deployment"]["wave"], round(time.monotonic() - start, 1))
            if time.monotonic() >= next_note:
                next_note += 60
                progress = sum(w["updated"] for w in status["waves"])
                print(f"    {time.monotonic() - start:.0f} s: wave {status['deployment']['wave']}, {progress} updated")
            updated = sum(w["updated"] for w in status["waves"])
            if status["deployment"]["state"] == "completed" and updated >= devices:
                break
            time.sleep(1)
        done = time.monotonic() - start
    after = sample(hub, sim)
    spied = spy.finish() if spy else None
    updated = sum(w["updated"] for w in status.get("waves", []))
    figures: dict[str, Any] = {
        "release": release,
        "target": target,
        "waves_asked": plan.waves,
        "max_pending": plan.max_pending,
        "devices": devices,
        "state": status.get("deployment", {}).get("state"),
        "updated": updated,
        "completed": status.get("deployment", {}).get("state") == "completed" and updated >= devices,
        "seconds": round(done, 1),
        "create_cli_s": round(created, 2),
        "wave_2_started_s": wave_started.get(2),
        "waves_started_s": {str(w): at for w, at in sorted(wave_started.items())},
        "waves": [
            {k: w[k] for k in ("wave", "size", "updated", "failed", "pending", "downloading")}
            for w in status.get("waves", [])
        ],
        "hub_cpu_s": round(after.hub_cpu - before.hub_cpu, 1),
        "sim_cpu_s": round(after.sim_cpu - before.sim_cpu, 1),
        "postgres_cpu_s": round(grown(before.postgres_cpu, after.postgres_cpu), 1),
        "started_at": started_wall.isoformat(),
        "updated_per_s": round(updated / done, 2),
        "hub_cpu_s_per_device": round((after.hub_cpu - before.hub_cpu) / max(updated, 1), 3),
        "sim_cpu_s_per_device": round((after.sim_cpu - before.sim_cpu) / max(updated, 1), 3),
    }
    if spied:
        figures["profile"] = spied
    figures |= member_times(hub, name, observers.changed)
    return figures


def member_times(hub: Hub, name: str, observed: dict[str, datetime]) -> dict[str, Any]:
    """From the hub's database: when devices were assigned and fetched, against the deployment's creation."""
    engine = create_engine(hub.sqlalchemy_url())
    try:
        with engine.connect() as conn:
            deployment_id, created_at = conn.execute(
                select(DeploymentRow.id, DeploymentRow.created_at).where(DeploymentRow.name == name)
            ).one()
            rows = conn.execute(
                select(
                    DeploymentMemberRow.device_id,
                    DeploymentMemberRow.wave,
                    DeploymentMemberRow.assigned_at,
                    DeploymentMemberRow.fetched_at,
                ).where(DeploymentMemberRow.deployment_id == deployment_id)
            ).all()
    finally:
        engine.dispose()
    fetched = [r.fetched_at for r in rows if r.fetched_at is not None]
    to_fetch = sorted((r.fetched_at - r.assigned_at).total_seconds() for r in rows if r.fetched_at is not None)
    assigned = {r.device_id: r.assigned_at for r in rows}
    to_answer = sorted((at - assigned[d]).total_seconds() for d, at in observed.items() if d in assigned)
    per_wave = {}
    for wave in sorted({r.wave for r in rows}):
        values = sorted((r.fetched_at - r.assigned_at).total_seconds() for r in rows if r.wave == wave and r.fetched_at)
        per_wave[str(wave)] = _spread(values)
    return {
        "members": len(rows),
        "fetched": len(fetched),
        "first_fetch_after_create_s": round((min(fetched) - created_at).total_seconds(), 2) if fetched else None,
        "last_assigned_after_create_s": round((max(assigned.values()) - created_at).total_seconds(), 2)
        if assigned
        else None,
        "fetch_after_assigned_s": _spread(to_fetch),
        "fetch_after_assigned_by_wave_s": per_wave,
        # A paced rollout holds devices back before it assigns them: how long, from the creation.
        "assigned_after_create_s": _spread([(at - created_at).total_seconds() for at in assigned.values()]),
        "observed_answer_after_assigned_s": _spread(to_answer),
    }


def _spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1], 3)

    return {"n": len(ordered), "p50": at(0.5), "p95": at(0.95), "max": round(ordered[-1], 3)}


# --- steady state, profile, ceiling --------------------------------------------------------------


def steady(hub: Hub, sim: Sims, plan: Plan) -> dict[str, Any]:
    """A warm-up, then one window between two samples; the hub's memory read every `plan.memory_every` meanwhile."""
    print(f"  steady state: warm-up {plan.warmup:.0f} s, window {plan.window:.0f} s", flush=True)
    time.sleep(plan.warmup)
    load = loadavg()
    before = sample(hub, sim)
    readings: list[tuple[float, int, int, list[float]]] = []
    while (elapsed := time.monotonic() - before.at) < plan.window:
        rss, pss = tree_memory(hub.pid)
        readings.append((elapsed, rss, pss, loadavg()))
        time.sleep(min(plan.memory_every, max(plan.window - elapsed, 0.1)))
    after = sample(hub, sim)
    readings.append((after.at - before.at, after.hub_rss, after.hub_pss, loadavg()))
    return {
        "load_at_start": load,
        "load_at_end": loadavg(),
        **window_figures(before, after),
        "memory": memory_trend(readings),
    }


def memory_trend(readings: list[tuple[float, int, int, list[float]]]) -> dict[str, Any]:
    """The hub's memory over the window: every reading, and the median of its first and last fifths (growth)."""
    fifth = max(1, len(readings) // 5)

    def median(values: list[int]) -> float:
        ordered = sorted(values)
        middle = len(ordered) // 2
        return (ordered[middle] + ordered[~middle]) / 2 / 2**20

    first = median([pss for _, _, pss, _ in readings[:fifth]])
    last = median([pss for _, _, pss, _ in readings[-fifth:]])
    return {
        "readings": [
            {"s": round(at), "rss_mib": round(rss / 2**20, 1), "pss_mib": round(pss / 2**20, 1), "load": load}
            for at, rss, pss, load in readings
        ],
        "pss_mib_first_fifth_median": round(first, 1),
        "pss_mib_last_fifth_median": round(last, 1),
        "pss_growth_mib": round(last - first, 1),
        "pss_mib_max": round(max(pss for _, _, pss, _ in readings) / 2**20, 1),
    }


MILLION = 1_000_000
NODE_CORES = 2
NODE_BUSY = 0.7
"""Share of a node's cores the projection lets the hub and its database use (headroom for bursts and rollouts)."""


def projection(devices: int, s: dict[str, Any], r: dict[str, Any] | None) -> dict[str, Any]:
    """From the steady window (and the rollout): CPU a fleet of 1M devices at the same cadence would use.

    Linear in the devices: each node serves its devices' steady traffic with the hub CPU per device measured
    here; PostgreSQL's share is shown apart (not in the nodes), so that the central database can be sized.
    """
    seconds = s["seconds"]
    per_device_per_s = s["requests"] / seconds / devices
    hub_core_per_device = s["hub_cpu_s"] / seconds / devices
    pg_core_per_device = s["postgres_cpu_share"] / devices
    million_hub = hub_core_per_device * MILLION
    million_pg = pg_core_per_device * MILLION
    out: dict[str, Any] = {
        "requests_per_device_per_min": round(per_device_per_s * 60, 2),
        "hub_cpu_ms_per_request": round(s["hub_cpu_s"] / max(s["requests"], 1) * 1000, 3),
        "hub_cores_for_1m": round(million_hub, 1),
        "postgres_cores_for_1m": round(million_pg, 1),
        "requests_per_s_for_1m": round(per_device_per_s * MILLION),
        "nodes_for_1m": math.ceil(million_hub / (NODE_CORES * NODE_BUSY)),
        "devices_per_node": int(NODE_CORES * NODE_BUSY / hub_core_per_device) if hub_core_per_device else None,
    }
    if r and r.get("updated"):
        out["rollout_hub_cpu_ms_per_device"] = round(r["hub_cpu_s_per_device"] * 1000, 1)
        out["rollout_1m_hub_core_hours"] = round(r["hub_cpu_s_per_device"] * MILLION / 3600, 1)
    return out


class Profile:
    """py-spy (when installed) sampling the hub without pausing it, from `start` until `finish` (SIGINT).

    With `gil` (the default) only the thread holding the GIL is sampled (`--gil`): the hub is bound by one
    core's worth of Python, so that is where its CPU goes (C code that releases the GIL, TLS and libpq, is
    not shown).
    """

    def __init__(self, hub: Hub, out: Path, *, rate: int = 50, gil: bool = True) -> None:
        self.spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.hub = hub
        self.rate, self.gil = rate, gil
        self.raw = out.with_suffix(".txt")
        self.log = out.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Profile:
        if Path(self.spy).exists():
            self.started = time.monotonic()
            self.process = subprocess.Popen(
                [
                    self.spy,
                    "record",
                    "--pid",
                    str(self.hub.pid),
                    *("--rate", str(self.rate)),
                    *(["--gil"] if self.gil else []),
                    "--format",
                    "raw",
                    "--nonblocking",
                    *(["--subprocesses"] if self.hub.workers > 1 else []),
                    "--output",
                    str(self.raw),
                ],
                stdout=self.log.open("wb"),
                stderr=subprocess.STDOUT,
            )
        return self

    def finish(self) -> dict[str, Any]:
        if self.process is None:
            return {"skipped": "py-spy is not installed (`.venv/bin/pip install py-spy`)"}
        seconds = time.monotonic() - self.started
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if not self.raw.exists():
            return {"skipped": f"py-spy failed: {self.log.read_text(errors='replace')[-500:]}"}
        try:
            return {"seconds": round(seconds, 1), **summarise_profile(self.raw.read_text())}
        except (ValueError, IndexError) as exc:  # a profile is a by-product: never lose the run's figures to it
            return {"skipped": f"unreadable profile: {exc!r}"}


def profile(hub: Hub, seconds: float, out: Path) -> dict[str, Any]:
    spy = Profile(hub, out).start()
    time.sleep(seconds)
    return spy.finish()


CATEGORIES = (
    (
        "TLS and sockets (ssl, asyncio transports)",
        ("ssl.py", "asyncio/sslproto", "asyncio/selector_events", "selectors.py"),
    ),
    ("asyncio event loop", ("asyncio/",)),
    ("uvicorn / h11 (HTTP parsing)", ("uvicorn/", "h11/")),
    ("starlette / fastapi / anyio (routing, dependencies, thread pool)", ("starlette/", "fastapi/", "anyio/")),
    ("pydantic (validation, serialisation)", ("pydantic",)),
    ("device token check (jwt, cryptography)", ("jwt/", "cryptography/", "edgefleet/crypto.py")),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("database driver (sqlite3, psycopg)", ("sqlite3", "psycopg/", "psycopg_binary")),
    ("prometheus_client (metrics)", ("prometheus_client/",)),
    ("edgefleet (hub code)", ("edgefleet/",)),
    ("threading (thread pool hand-off)", ("threading.py", "concurrent/futures")),
)


WAITS = (
    "Connection.wait (/psycopg/",
    "EpollSelector.select (/selectors.py)",
    "Condition.wait (/threading.py)",
    "Event.wait (/threading.py)",
    "Queue.get (/queue.py)",
    "_worker (/concurrent/futures/thread.py)",
)
"""Leaf frames of a thread that waits (for the database, for sockets, for work): a profile without --gil samples
them too, so they are counted apart as waiting, not as CPU."""


def summarise_profile(raw: str) -> dict[str, Any]:
    """Where the hub's threads were: waiting, or busy (by library of the leaf frame, and top functions)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = busy = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if not f.startswith("process ")]  # --subprocesses
        if not frames:
            continue
        total += count
        event_loop = not frames[0].startswith("Thread._bootstrap (")  # run with -m: the main thread starts in runpy
        waiting = frames[-1].startswith(WAITS)
        threads[f"{'event loop' if event_loop else 'thread pool'} {'waiting' if waiting else 'busy'}"] += count
        if waiting:
            continue
        busy += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
        libraries[_category(frames)] += count

    def share(count: int, of: int) -> float:
        return round(count / of, 3) if of else 0.0

    hub_code = [
        (name, share(count, busy))
        for name, count in inclusive.most_common()
        if "/edgefleet/" in name and "/edgefleet/cli/" not in name and "lifecycle.py" not in name
    ]
    return {
        "samples": total,
        "threads": {k: share(v, total) for k, v in threads.most_common()},
        "busy_by_library_of_leaf": {k: share(v, busy) for k, v in libraries.most_common(14)},
        "busy_top_own": [(k, share(v, busy)) for k, v in own.most_common(15)],
        "busy_top_hub_functions": hub_code[:20],
    }


def _frame(frame: str) -> str:
    """'function (path/to/module.py:LINE)' -> 'function (module path from the package)'."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    for marker in ("site-packages/", "lib/python3.11/", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{function} (/{path})"


def _category(frames: list[str]) -> str:
    leaf = frames[-1]
    for name, markers in CATEGORIES:
        if any(m in leaf for m in markers):
            return name
    return "other (" + leaf.split("(/", 1)[-1].split("/", 1)[0].rstrip(")") + ")"


def ceiling(hub: Hub, state_dir: Path, scratch: Path, plan: Plan) -> dict[str, Any]:
    """The load generator against the minimal app on the same stack, then against the hub; with the ratio."""
    port = free_port()
    log = (scratch / "ceiling.log").open("w")
    app = subprocess.Popen(
        [
            sys.executable,
            str(BENCH / "ceiling_app.py"),
            "--data-dir",
            str(hub.data_dir),
            "--bind",
            f"127.0.0.1:{port}",
            "--long-poll-max-seconds",
            str(LONG_POLL),
            "--max-concurrent",
            str(MAX_CONCURRENT),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    results: dict[str, Any] = {"load": loadavg()}
    try:
        wait_ready(f"https://127.0.0.1:{port}", hub.ca, app, scratch / "ceiling.log", path="/")
        targets = {
            "minimal_app": (f"https://127.0.0.1:{port}", app.pid, ["--path", "/"]),
            "hub_healthz": (hub.url, hub.pid, ["--path", "/healthz"]),
            "hub_device_target": (hub.url, hub.pid, ["--device-target", "--state-dir", str(state_dir)]),
        }
        for name, (url, pid, extra) in targets.items():
            out = subprocess.run(
                [
                    sys.executable,
                    str(BENCH / "fleet_load.py"),
                    "--url",
                    url,
                    "--ca",
                    str(hub.ca),
                    "--seconds",
                    str(plan.ceiling),
                    "--warmup",
                    "3",
                    "--concurrency",
                    "32",
                    "--server-pid",
                    str(pid),
                    *extra,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                results[name] = {"error": out.stderr[-1500:]}
                continue
            results[name] = json.loads(out.stdout)
    finally:
        stop(app)
        log.close()
    minimal = results.get("minimal_app", {}).get("requests_per_s")
    for name in ("hub_healthz", "hub_device_target"):
        rate = results.get(name, {}).get("requests_per_s")
        if minimal and rate:
            results[f"{name}_ratio"] = round(rate / minimal, 3)
    return results


# --- one case, the run ---------------------------------------------------------------------------


def token(hub: Hub, tag: str, uses: int) -> str:
    """An enrollment token of the fleet `scale` for `uses` devices, tagging them with `tag`."""
    made = hub.cli("token", "create", "--fleet", "scale", "--tag", tag, "--uses", str(uses), "--ttl", "7d", "--json")
    return str(json.loads(made)["token"])


@dataclass(frozen=True)
class Shape:
    """How a case is laid out: hub processes, simulator processes, and which parts a rollout targets."""

    workers: int = 1
    sims: int = 1
    rollout_parts: int | None = None
    """The rollouts target the devices of the first this-many simulator parts (None: all)."""

    def shares(self, devices: int) -> list[int]:
        return [devices // self.sims + (1 if part < devices % self.sims else 0) for part in range(self.sims)]

    def target(self) -> str:
        parts = self.rollout_parts or self.sims
        if parts >= self.sims:
            return "fleet=scale"
        return f"fleet=scale and part in ({', '.join(str(p) for p in range(parts))})"


def run_case(
    db: str,
    devices: int,
    plan: Plan,
    *,
    do_profile: bool,
    do_ceiling: bool,
    install_first: bool,
    quiet_enrollment: bool,
    shape: Shape = Shape(),
) -> dict[str, Any]:
    print(f"\n== {db}, {devices} devices, {shape} ==", flush=True)
    case: dict[str, Any] = {"db": db, "devices": devices, "shape": shape.__dict__, **quiet_enough(f"{db} {devices}")}
    scratch = Path(tempfile.mkdtemp(prefix="fleetscale-", dir="/tmp"))
    shares = shape.shares(devices)
    try:
        with ExitStack() as stack:
            database_url = stack.enter_context(fresh_postgres()) if db == "postgres" else None
            hub = stack.enter_context(running_hub(scratch, database_url, shape.workers))
            publish(hub, scratch)
            tokens = [token(hub, f"part={part}", share) for part, share in enumerate(shares)]
            timeout = 120 + devices * 0.25
            if quiet_enrollment:
                # Enroll with reports every hour, so that enrolling does not compete with the fleet's own
                # traffic; then the measured simulators take over the enrolled devices (spread over 60 s).
                enrolling = Sims.start(hub, shares, tokens, scratch, plan, report_interval=3600, name="sim-enroll")
                case["enrollment"] = {"quiet": True, **wait_online(hub, enrolling, devices, timeout=timeout)}
                enrolling.finish()
                print(f"  enrolled (reports hourly meanwhile): {case['enrollment']}", flush=True)
                sim = Sims.start(hub, shares, tokens, scratch, plan, ramp=60)
                stack.callback(lambda: case.setdefault("sim_summary", sim.finish()))
                # A saturated hub brings devices back slowly (each verifies first): measure what is online by then.
                case["reconnect"] = wait_online(hub, sim, devices, timeout=min(timeout, RECONNECT_CAP))
            else:
                sim = Sims.start(hub, shares, tokens, scratch, plan)
                stack.callback(lambda: case.setdefault("sim_summary", sim.finish()))
                case["enrollment"] = wait_online(hub, sim, devices, timeout=timeout)
                print(f"  enrolled: {case['enrollment']}", flush=True)
            case["first_verification"] = wait_verified(hub, sim, devices, plan.verified_timeout)
            print(f"  first TUF refreshes over: {case['first_verification']}", flush=True)
            online = case["enrollment"]["online"]
            targeted = min(sum(shares[: shape.rollout_parts or shape.sims]), online)
            release = "sensor@1.0.0"
            if install_first:
                print("  rollout of sensor@1.0.0 (first install)", flush=True)
                case["rollout_install"] = rollout(
                    hub, sim, plan, name="base", release=release, target=shape.target(), devices=targeted, priority=0
                )
                _show_rollout(case["rollout_install"])
                release = "sensor@1.1.0"
            case["steady"] = steady(hub, sim, plan)
            _show_steady(case["steady"])
            if do_profile:
                print(f"  profile of the steady state: py-spy over {plan.profile:.0f} s", flush=True)
                case["profile"] = profile(hub, plan.profile, scratch / "profile")
            print(f"  rollout of {release} to {shape.target()!r} ({targeted} devices)", flush=True)
            case["rollout"] = rollout(
                hub,
                sim,
                plan,
                name="scale",
                release=release,
                target=shape.target(),
                devices=targeted,
                priority=1,
                spy=Profile(hub, scratch / "profile-rollout") if do_profile else None,
            )
            _show_rollout(case["rollout"])
            case["projection"] = projection(devices, case["steady"], case["rollout"])
            print(f"  projection: {case['projection']}", flush=True)
            case["sim_summary"] = sim.finish()
            if do_ceiling:
                print("  ceiling (simulator stopped)", flush=True)
                case["ceiling"] = ceiling(hub, sim.state_dir(0), scratch, plan)
                _show_ceiling(case["ceiling"])
            rss, pss = tree_memory(hub.pid)
            case["hub_rss_mib_end"], case["hub_pss_mib_end"] = round(rss / 2**20, 1), round(pss / 2**20, 1)
    except Exception as exc:  # noqa: BLE001  # an hour's figures are kept, with what stopped the case
        traceback.print_exc()
        case["error"] = repr(exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return case


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "elapsed_s",
        "devices",
        "enrolled",
        "committed",
        "failed",
        "refused",
        "requests",
        "errors",
        "latency",
        "jobs",
        "cpu_s",
        "error",
    )
    return {k: summary[k] for k in keep if k in summary}


def _show_rollout(r: dict[str, Any]) -> None:
    print(
        f"    {r['release']}: {'completed' if r['completed'] else 'NOT completed'} ({r['updated']} updated) in "
        f"{r['seconds']} s (wave 2 at {r['wave_2_started_s']} s); first fetch {r['first_fetch_after_create_s']} s "
        f"after create; pace {r.get('max_pending')}, assigned - create {r.get('assigned_after_create_s')}; "
        f"fetch - assigned {r['fetch_after_assigned_s']}; observed answer - assigned "
        f"{r['observed_answer_after_assigned_s']}; {r['updated_per_s']} devices/s; hub CPU {r['hub_cpu_s']} s "
        f"({r['hub_cpu_s_per_device']} s per device), simulator {r['sim_cpu_s_per_device']} s per device",
        flush=True,
    )


def _show_steady(s: dict[str, Any]) -> None:
    print(
        f"    {s['requests_per_s']} req/s, p50 {s['p50_ms']} ms p99 {s['p99_ms']} ms, errors hub {s['hub_errors']} "
        f"sim {s['sim_errors']}, RSS {s['hub_rss_mib']} MiB (PSS {s['hub_pss_mib']}, growth "
        f"{s.get('memory', {}).get('pss_growth_mib')}), hub CPU {s['hub_cpu_share']:.0%} "
        f"({s['hub_cpu_s_per_1k']} s per 1k requests), load {s['load_at_start']}",
        flush=True,
    )
    print(f"    collector's pauses by generation: {s.get('gc_pauses')}", flush=True)
    print(f"    non-held requests by route: {s.get('non_held_by_route')}", flush=True)


def _show_ceiling(c: dict[str, Any]) -> None:
    for name in ("minimal_app", "hub_healthz", "hub_device_target"):
        f = c.get(name, {})
        print(
            f"    {name}: {f.get('requests_per_s')} req/s p50 {f.get('p50_ms')} ms p99 {f.get('p99_ms')} ms "
            f"server CPU {f.get('server_cpu_share')} statuses {f.get('statuses')} errors {f.get('transport_errors')}",
            flush=True,
        )
    print(f"    ratio device/target : minimal = {c.get('hub_device_target_ratio')}", flush=True)


def table(cases: list[dict[str, Any]]) -> str:
    head = (
        "| db | devices | req/s | p50 ms | p99 ms | errors (hub/sim) | hub RSS MiB | hub CPU | "
        "hub CPU s / 1k req | release to all | first fetch | fetch-assigned p95 | poll answer p95 |"
    )
    rows = [head, "|" + " --- |" * (head.count("|") - 1)]
    for c in cases:
        s, b = c.get("steady", {}), c.get("rollout", {})
        rows.append(
            f"| {c['db']} | {c['devices']} | {s.get('requests_per_s')} | {s.get('p50_ms')} | {s.get('p99_ms')} | "
            f"{s.get('hub_errors')}/{s.get('sim_errors')} | {s.get('hub_rss_mib')} | {_pct(s.get('hub_cpu_share'))} | "
            f"{s.get('hub_cpu_s_per_1k')} | {_took(b)} | {b.get('first_fetch_after_create_s')} s | "
            f"{b.get('fetch_after_assigned_s', {}).get('p95')} s | "
            f"{b.get('observed_answer_after_assigned_s', {}).get('p95')} s |"
        )
    return "\n".join(rows)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _took(r: dict[str, Any]) -> str:
    if not r:
        return "-"
    if r.get("completed"):
        return f"{r['seconds']} s"
    return f"{r.get('updated')} of {r.get('members')} after {r['seconds']} s ({r.get('updated_per_s')}/s)"


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "fd_limit": os.sysconf("SC_OPEN_MAX"),
    }


def main() -> None:  # one straight-line run
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", default="1000,5000,10000", help="comma-separated fleet sizes")
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 devices, short windows")
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--window", type=float, default=150)
    parser.add_argument("--profile-seconds", type=float, default=45, help="py-spy at the largest N per db (0: none)")
    parser.add_argument("--rollout-timeout", type=float, default=600, help="seconds a rollout may take at most")
    parser.add_argument("--install-first", action="store_true", help="roll 1.0.0 out first, time 1.1.0 (an update)")
    parser.add_argument("--out", type=Path, default=Path("fleet_scale.json"))
    parser.add_argument(
        "--quiet-enrollment", action="store_true", help="enroll with hourly reports, then restart the simulator"
    )
    parser.add_argument("--ceiling-devices", type=int, help="the fleet size whose case measures the ceiling")
    parser.add_argument("--hub-workers", type=int, default=1, help="hub serve --workers (PostgreSQL)")
    parser.add_argument("--sims", type=int, default=1, help="simulator processes (one connection per device each)")
    parser.add_argument("--rollout-parts", type=int, help="roll out to the first this-many simulators' devices")
    parser.add_argument("--waves", default=WAVES, help="the rollouts' waves")
    parser.add_argument(
        "--sim-workers", type=int, help="each simulator's verification workers (edgefleet sim --workers)"
    )
    parser.add_argument("--max-pending", type=int, help="the rollouts' pace (deploy create --max-pending)")
    parser.add_argument("--memory-every", type=float, default=30, help="seconds between readings of the hub's memory")
    parser.add_argument(
        "--verified-timeout", type=float, default=1800, help="seconds the takeover's first verifications may take"
    )
    parser.add_argument("--summarise-profile", type=Path, help="only summarise a py-spy raw file and exit")
    args = parser.parse_args()
    if args.summarise_profile:
        print(json.dumps(summarise_profile(args.summarise_profile.read_text()), indent=1))
        return
    sizes = [200] if args.quick else [int(n) for n in args.devices.split(",")]
    dbs = args.db.split(",")
    plan = (
        Plan(
            warmup=10,
            window=30,
            profile=min(args.profile_seconds, 10),
            rollout_timeout=300,
            ceiling=5,
            waves=args.waves,
            memory_every=5,
            verified_timeout=120,
            max_pending=args.max_pending,
        )
        if args.quick
        else Plan(
            args.warmup,
            args.window,
            args.profile_seconds,
            args.rollout_timeout,
            ceiling=20,
            waves=args.waves,
            memory_every=args.memory_every,
            verified_timeout=args.verified_timeout,
            sim_workers=args.sim_workers,
            max_pending=args.max_pending,
        )
    )
    shape = Shape(workers=args.hub_workers, sims=args.sims, rollout_parts=args.rollout_parts)
    run: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "plan": plan.__dict__,
        "cases": [],
    }
    print(f"machine: {run['machine']}", flush=True)
    for db in dbs:
        for n in sizes:
            case = run_case(
                db,
                n,
                plan,
                do_profile=bool(plan.profile) and n == max(sizes),
                do_ceiling=n == (args.ceiling_devices or min(sizes)),
                install_first=args.install_first,
                quiet_enrollment=args.quiet_enrollment,
                shape=shape,
            )
            run["cases"].append(case)
            args.out.write_text(json.dumps(run, indent=2, default=str) + "\n")
    print("\n" + table(run["cases"]))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
