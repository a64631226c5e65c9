"""Benchmark (issue 16 point 2): the hub's CPU for one device's update path, step by step, beside the bare stack.

One `edgefleet hub serve` process (TLS, as users run it) on a fresh PostgreSQL database (or
SQLite), two releases of `sensor` published with the CLI, `--devices` devices enrolled
through it with the agent's code (key, CSR, TUF roots trusted on first use). Then, per round,
an operator assigns each device the other release (through the API, as `device assign` does;
a rollback mark when it goes back), and every device in turn runs the agent's update path
against the hub, one step for all devices before the next:

- `poll`: the target-state poll that learns of the change (answered 200);
- `verify`: the agent's `ReleaseVerifier` (as `edgefleet sim` runs it): the director's TUF
  refresh, the image repository's, and the release's manifest, every byte checked;
- `events`: the `committed` event;
- `report`: the state report that says so (a changed report).

It also prints the hub's CPU per kind of request (a mean; see `Counted`).

Requests are made one at a time over one kept-alive connection, so the hub's CPU over a step
(its CPU seconds from /proc, less its idle share of a core measured first) divided by the
devices is that step's cost per device; the `assign` step is the operator's and is shown
apart. The bare stack (bench/ceiling_app.py on the same server stack) is measured in the same
run with bench/fleet_load.py; the ratio is its CPU per request times the requests of one
update, over the hub's update-path CPU per device. Medians over rounds, min-max beside them.

    .venv/bin/python bench/update_path.py [--db postgres|sqlite] [--devices 32] [--rounds 6]
    .venv/bin/python bench/update_path.py --rounds 2 --profile DIR   # where the hub's time goes (py-spy)
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import fleet_scale as fs  # noqa: E402  # the bench's shared helpers: hub, database, processes

from edgefleet.agent.client import DeviceClient  # noqa: E402
from edgefleet.agent.decide import Installed  # noqa: E402
from edgefleet.agent.identity import LocalIdentity, load_identity  # noqa: E402
from edgefleet.agent.policy import Policy  # noqa: E402
from edgefleet.agent.runner import event  # noqa: E402
from edgefleet.protocol import API_PREFIX  # noqa: E402
from edgefleet.sim.work import EnrollJob, VerifyJob, enroll_with, verify_with  # noqa: E402

STEPS = ("poll", "verify", "events", "report")
VERSIONS = ("1.0.0", "1.1.0")


@dataclass
class Device:
    """One enrolled device's state directory and what it has installed, as the agent keeps them."""

    data_dir: Path
    identity: LocalIdentity
    installed: dict[str, Installed] = field(default_factory=dict)
    etag: str | None = None
    seq: int = 0

    @property
    def id(self) -> str:
        return self.identity.device_id


def request_kind(request: httpx.Request, status: int) -> str:
    """'GET /tuf/director/N.snapshot.json 200': the request without its device id, version or digest."""
    path = request.url.path.removeprefix(API_PREFIX)
    path = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "ID", path)
    path = re.sub(r"/[0-9]+\.", "/N.", path)
    path = re.sub(r"/targets/.*", "/targets/DIR/SHA256.NAME", path)
    return f"{request.method} {path} {status}"


class Counted:
    """A device client over one kept-alive connection, counting its requests and the hub's CPU over each.

    The hub's CPU is read before a request is sent and once its answer's head is in: with one
    request at a time that is the hub's work on it (in 10 ms ticks, so only means over many
    requests are worth reading).
    """

    def __init__(self, hub: fs.Hub) -> None:
        self.requests = 0
        self.costs: dict[str, list[float]] = defaultdict(list)
        sent = [0.0]

        def before(_: httpx.Request) -> None:
            sent[0] = fs.cpu_seconds(hub.pid)

        def after(response: httpx.Response) -> None:
            self.requests += 1
            cost = fs.cpu_seconds(hub.pid) - sent[0]
            self.costs[request_kind(response.request, response.status_code)].append(cost)

        hooks = {"request": [before], "response": [after]}
        http = httpx.Client(base_url=hub.url, verify=str(hub.ca), timeout=60, event_hooks=hooks, http2=False)
        self.client = DeviceClient(http)

    def per_request(self) -> dict[str, dict[str, float]]:
        """Mean hub CPU (ms) per request kind, most costly first."""
        means = {kind: (1000 * sum(c) / len(c), len(c)) for kind, c in self.costs.items()}
        ordered = sorted(means.items(), key=lambda item: -item[1][0])
        return {kind: {"hub_cpu_ms": round(mean, 2), "requests": count} for kind, (mean, count) in ordered}


def enroll_all(hub: fs.Hub, state_dir: Path, count: int, client: DeviceClient) -> list[Device]:
    made = hub.cli("token", "create", "--fleet", "bench", "--uses", str(count), "--json")
    token = str(json.loads(made)["token"])
    devices = []
    for index in range(count):
        data_dir = state_dir / f"device-{index:04d}"
        enrolled = enroll_with(client, EnrollJob(data_dir, token, "arm64", f"bench-{index}"))
        if enrolled.failure is not None:
            raise SystemExit(f"enrollment failed: {enrolled.failure}")
        devices.append(Device(data_dir, load_identity(data_dir)))
    return devices


def assign(hub: fs.Hub, device: Device, version: str) -> None:
    installed = device.installed.get("sensor")
    rollback = installed is not None and installed.version > version
    answer = hub.http.post(
        f"{API_PREFIX}/devices/{device.id}/assignments",
        json={"app": "sensor", "version": version, "rollback": rollback},
    )
    if answer.status_code != 200:
        raise SystemExit(f"device {device.id}: assign answered {answer.status_code}: {answer.text[:300]}")


def poll(device: Device, client: DeviceClient) -> None:
    target, etag = client.target_state(device.identity, wait=0, etag=device.etag)
    if target is None:
        raise SystemExit(f"device {device.id}: the poll did not see its new assignment")
    device.etag = etag


def verify(device: Device, client: DeviceClient) -> None:
    job = VerifyJob(
        data_dir=device.data_dir, arch="arm64", installed=dict(device.installed), failed={}, policy=Policy()
    )
    verified = verify_with(client, job)
    if verified.failure is not None or len(verified.candidates) != 1:
        raise SystemExit(f"device {device.id}: verification failed: {verified.failure}")
    candidate = verified.candidates[0]
    device.installed[candidate.app] = candidate.entry


def events(device: Device, client: DeviceClient) -> None:
    device.seq += 1
    entry = device.installed["sensor"]
    body = {**event(None, "sensor", "committed", to_release=entry.version), "seq": device.seq}
    if client.events(device.identity, [body], dropped=0) != device.seq:
        raise SystemExit(f"device {device.id}: event {device.seq} not acknowledged")


def report(device: Device, client: DeviceClient) -> None:
    entry = device.installed["sensor"]
    properties = {
        "apps": {"sensor": {"version": entry.version, "release_counter": entry.release_counter}},
        "agent_version": "bench",
        "arch": "arm64",
        "last_error": None,
    }
    client.report(device.identity, properties)


ACTIONS: dict[str, Callable[[Device, DeviceClient], None]] = {
    "poll": poll,
    "verify": verify,
    "events": events,
    "report": report,
}


def system_seconds(pid: int) -> float:
    """stime of one process: the kernel's share of its CPU (sockets, wake-ups)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / fs.TICKS


def measured(hub: fs.Hub, idle_share: float, run: Callable[[], None]) -> tuple[float, float, float]:
    """(hub CPU seconds less its idle share, of them in the kernel, wall seconds) over `run`."""
    before, system, started = fs.cpu_seconds(hub.pid), system_seconds(hub.pid), time.monotonic()
    run()
    wall = time.monotonic() - started
    return max(fs.cpu_seconds(hub.pid) - before - idle_share * wall, 0.0), system_seconds(hub.pid) - system, wall


def one_round(hub: fs.Hub, devices: list[Device], counted: Counted, idle_share: float, version: str) -> dict[str, Any]:
    figures: dict[str, Any] = {"load": fs.loadavg()}
    per_device = 1000 / len(devices)
    cpu, system, wall = measured(hub, idle_share, lambda: [assign(hub, d, version) for d in devices])
    figures["assign"] = {"hub_cpu_ms": round(cpu * per_device, 2), "wall_ms": round(wall * per_device, 2)}
    for step in STEPS:
        action = ACTIONS[step]
        requests = counted.requests
        cpu, system, wall = measured(
            hub, idle_share, lambda action=action: [action(d, counted.client) for d in devices]
        )  # type: ignore[misc]
        figures[step] = {
            "hub_cpu_ms": round(cpu * per_device, 2),
            "kernel_cpu_ms": round(system * per_device, 2),
            "wall_ms": round(wall * per_device, 2),
            "requests": round((counted.requests - requests) / len(devices), 2),
        }
    figures["update_path"] = {
        key: round(sum(figures[s][key] for s in STEPS), 2) for key in ("hub_cpu_ms", "kernel_cpu_ms", "requests")
    }
    return figures


def bare_cpu_per_request(hub: fs.Hub, app_url: str, app_pid: int, seconds: float) -> dict[str, Any]:
    figures: dict[str, Any] = fs.closed_loop(
        hub, app_url, app_pid, seconds, "--concurrency", "32", "--path", "/", warmup=2
    )
    if "error" in figures:
        raise SystemExit(f"the bare stack's closed loop failed: {figures['error']}")
    return figures


def summarise(rounds: list[dict[str, Any]], bare: list[dict[str, Any]]) -> dict[str, Any]:
    def spread(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values)}

    summary: dict[str, Any] = {}
    for step in ("assign", *STEPS, "update_path"):
        summary[step] = {"hub_cpu_ms": spread([r[step]["hub_cpu_ms"] for r in rounds])}
        for key in ("kernel_cpu_ms", "requests"):
            if key in rounds[0][step]:
                summary[step][key] = round(statistics.median(r[step][key] for r in rounds), 2)
    bare_ms = statistics.median(b["server_cpu_ms_per_request"] for b in bare)
    summary["bare_cpu_ms_per_request"] = round(bare_ms, 4)
    path_ms = summary["update_path"]["hub_cpu_ms"]["median"]
    summary["ratio"] = round(bare_ms * summary["update_path"]["requests"] / path_ms, 3) if path_ms else None
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| step | hub CPU per device, ms (min-max) | of it in the kernel | requests |",
        "| --- | --- | --- | --- |",
    ]
    for step in ("assign", *STEPS, "update_path"):
        cpu, got = summary[step]["hub_cpu_ms"], summary[step].get
        spread = f"{cpu['median']} ({cpu['min']}-{cpu['max']})"
        lines.append(f"| {step} | {spread} | {got('kernel_cpu_ms', '-')} | {got('requests', '-')} |")
    lines.append(f"\nbare stack: {summary['bare_cpu_ms_per_request']} ms per request; ratio {summary['ratio']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--devices", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--bare-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, help="a directory: py-spy (bench-only) samples the hub's rounds there")
    args = parser.parse_args()
    started = datetime.now(UTC)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgefleet-update-path-")))
        database_url = stack.enter_context(fs.fresh_postgres()) if args.db == "postgres" else None
        hub = stack.enter_context(fs.running_hub(scratch, database_url))
        fs.publish(hub, scratch)
        counted = Counted(hub)
        stack.callback(counted.client.close)
        devices = enroll_all(hub, scratch / "devices", args.devices, counted.client)
        app_url, app_pid = stack.enter_context(fs.running_bare_app(hub, scratch))
        # The first round installs (and fills the caches a running hub has); it is not counted.
        one_round(hub, devices, counted, 0.0, VERSIONS[0])
        counted.costs.clear()
        before = fs.cpu_seconds(hub.pid)
        time.sleep(5)
        idle_share = (fs.cpu_seconds(hub.pid) - before) / 5
        spy = fs.Profile(hub, args.profile / "update-path", rate=250).start() if args.profile else None
        rounds, bare = [], []
        for index in range(args.rounds):
            rounds.append(one_round(hub, devices, counted, idle_share, VERSIONS[(index + 1) % 2]))
            bare.append(bare_cpu_per_request(hub, app_url, app_pid, args.bare_seconds))
            print(json.dumps({s: rounds[-1][s] for s in ("update_path", "load")}), flush=True)
        profile = spy.finish() if spy else None
    summary = {
        "started": started.isoformat(timespec="seconds"),
        "db": args.db,
        "devices": args.devices,
        "machine": fs.machine(),
        "python": platform.python_version(),
        "idle_hub_cpu_share": round(idle_share, 4),
        "summary": summarise(rounds, bare),
        "per_request": counted.per_request(),
        "rounds": rounds,
        "profile": profile,
    }
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["summary"], indent=2))
    print(table(summary["summary"]))
    print("\nhub CPU per request, mean over the rounds:")
    for kind, figures in summary["per_request"].items():
        print(f"  {figures['hub_cpu_ms']:6.2f} ms  {kind}  ({figures['requests']} requests)")


if __name__ == "__main__":
    main()
