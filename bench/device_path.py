"""Benchmark (issue 16): the hub's CPU per device request, beside the bare server stack measured in the same run.

One `edgefleet hub serve` process (TLS, as users run it) on a fresh PostgreSQL database (or
SQLite), 64 devices enrolled through it; then, for each repeat, in turn: the minimal ASGI app
on the same server stack (bench/ceiling_app.py) and each device request, every one a closed
loop of bench/fleet_load.py (32 keep-alive TLS connections, each request signed by one of the
devices as the agent signs):

- `target`: a poll answered 200 (no ETag);
- `not-modified`: a poll with the current ETag and no wait, answered 304;
- `held`: a poll with the current ETag held for `--wait` seconds, ending unchanged (304), with
  `--held-concurrency` connections;
- `report`: a state report that changes nothing (the device's twin already holds it).

Per case: requests/s, p50/p99, and the hub's CPU per request (its CPU seconds over the
window / requests answered, which includes what the hub spends while idle: its share of a
core with no requests, measured first, is printed beside); the ratio is the bare app's CPU per request over the hub's
(for a closed loop that saturates the process, the same as the ratio of requests/s). Medians
over `--repeats`, min-max beside them; the machine's load average before each repeat.

    .venv/bin/python bench/device_path.py [--db postgres|sqlite] [--repeats 3] [--seconds 15]
    .venv/bin/python bench/device_path.py --repeats 1 --profile DIR   # where the hub's time goes (py-spy)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import fleet_scale as fs  # noqa: E402  # the bench's shared helpers: hub, database, processes

from edgefleet.agent.client import DeviceClient  # noqa: E402
from edgefleet.agent.enroll import enroll  # noqa: E402

DEVICES = 64
CASES = ("target", "not-modified", "held", "report")


def enroll_devices(hub: fs.Hub, state_dir: Path, count: int) -> None:
    """`count` devices enrolled through the hub, their identities under STATE_DIR/devices (as `edgefleet sim`)."""
    token = json.loads(hub.cli("token", "create", "--fleet", "bench", "--uses", str(count), "--json"))["token"]
    with DeviceClient.connect(hub.url, ca=hub.ca) as client:
        for index in range(count):
            enroll(client, state_dir / "devices" / f"device-{index:04d}", token=token, arch="arm64")


def load(hub: fs.Hub, url: str, pid: int, args: argparse.Namespace, *extra: str, concurrency: int = 32) -> Any:
    return fs.closed_loop(hub, url, pid, args.seconds, "--concurrency", str(concurrency), *extra)


def one_repeat(hub: fs.Hub, app_url: str, app_pid: int, state_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"load": fs.loadavg()}
    before = fs.cpu_seconds(hub.pid)
    time.sleep(args.seconds)
    figures["idle_hub_cpu_share"] = round((fs.cpu_seconds(hub.pid) - before) / args.seconds, 3)
    figures["bare"] = load(hub, app_url, app_pid, args, "--path", "/")
    for case in args.cases:
        extra = ("--mode", case, "--state-dir", str(state_dir), "--wait", str(args.wait))
        concurrency = args.held_concurrency if case == "held" else 32
        spy = fs.Profile(hub, args.profile / f"{case}.raw").start() if args.profile else None
        figures[case] = load(hub, hub.url, hub.pid, args, *extra, concurrency=concurrency)
        if spy is not None:
            figures[case]["profile"] = spy.finish()
    return figures


def summarise(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "load": [r["load"] for r in repeats],
        "idle_hub_cpu_share": [r["idle_hub_cpu_share"] for r in repeats],
    }
    for case in ("bare", *CASES):
        runs = [r[case] for r in repeats if case in r and "error" not in r[case]]
        if not runs:
            summary[case] = {"error": repeats[-1].get(case, {"error": "not run"}).get("error")}
            continue
        entry: dict[str, Any] = {}
        for key in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "server_cpu_share"):
            values = [run[key] for run in runs if run.get(key) is not None]
            if values:
                entry[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        entry["statuses"] = [run["statuses"] for run in runs]
        entry["transport_errors"] = [run["transport_errors"] for run in runs]
        summary[case] = entry
    ratios: dict[str, list[float]] = {}
    for repeat in repeats:
        bare = repeat["bare"].get("server_cpu_ms_per_request")
        for case in CASES:
            cost = repeat.get(case, {}).get("server_cpu_ms_per_request")
            if bare and cost:
                ratios.setdefault(case, []).append(bare / cost)
    summary["ratio_to_bare"] = {case: round(statistics.median(values), 3) for case, values in ratios.items()}
    return summary


def table(summary: dict[str, Any]) -> str:
    rows = [
        "| request | requests/s | p50 / p99 ms | hub CPU ms per request | ratio to bare (CPU) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in ("bare", *CASES):
        entry = summary[case]
        if "error" in entry:
            rows.append(f"| {case} | error | | | |")
            continue
        cpu = entry.get("server_cpu_ms_per_request", {})
        rate = entry.get("requests_per_s", {})
        ratio = 1 if case == "bare" else summary["ratio_to_bare"].get(case, "-")
        rows.append(
            f"| {case} | {rate.get('median')} ({rate.get('min')}-{rate.get('max')}) "
            f"| {entry.get('p50_ms', {}).get('median')} / {entry.get('p99_ms', {}).get('median')} "
            f"| **{cpu.get('median')}** ({cpu.get('min')}-{cpu.get('max')}) | {ratio} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--wait", type=float, default=1.0, help="how long a held poll is held")
    parser.add_argument("--held-concurrency", type=int, default=256)
    parser.add_argument("--cases", type=lambda text: text.split(","), default=list(CASES), help="e.g. held,report")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, help="a directory: py-spy (bench-only) profiles each case there")
    args = parser.parse_args()
    started = datetime.now(UTC)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgefleet-device-path-")))
        database_url = stack.enter_context(fs.fresh_postgres()) if args.db == "postgres" else None
        hub = stack.enter_context(fs.running_hub(scratch, database_url))
        state_dir = scratch / "devices-state"
        enroll_devices(hub, state_dir, DEVICES)
        app_url, app_pid = stack.enter_context(fs.running_bare_app(hub, scratch))
        repeats = [one_repeat(hub, app_url, app_pid, state_dir, args) for _ in range(args.repeats)]
    summary = {
        "started": started.isoformat(timespec="seconds"),
        "db": args.db,
        "machine": fs.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "summary": summarise(repeats),
        "repeats": repeats,
    }
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["summary"], indent=2))
    print(table(summary["summary"]))


if __name__ == "__main__":
    main()
