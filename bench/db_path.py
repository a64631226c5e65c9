"""Benchmark (issue 16 point 2): the CPU of an update's database work, per service call, in one process.

`bench/update_path.py` measures a hub over HTTP; on these shared machines its runs spread by
a third, too much to tell a 1 ms change. This one calls the hub's service functions in a loop
in its own process, against a hub set up as there (one `hub serve` on a fresh PostgreSQL
database, two releases published with the CLI, devices enrolled with the agent's code, each
assigned a release through the API), and reads its own process CPU: what the hub's Python
spends on an update's database work, steadily enough to compare two commits.

Per call (each device in turn, `--calls` calls, `--repeats` times; medians and minimums):

- `record`: a device's record read (`devices.load_device`: a poll's admission on a cache miss);
- `target`: its target answer read (`device_state.target_state`: the poll after an assignment);
- `resign`: its director metadata re-signed (the transaction `director.refresh` runs once the
  device's answers changed: lock, what it must state, its newest files, three signatures, write);
- `events`: a batch of one `committed` event recorded (`events.record_events`, a fresh token each);
- `report`: a changed state report (`devices.update_reported`, alternating two twins).

The same process's CPU for one read-only `SELECT 1` unit is measured between them (`bare`), and
each call is also given in those units. This process does not listen for other processes'
changes, so none of its device caches is used: every call does its database work.

    .venv/bin/python bench/db_path.py [--devices 8] [--calls 200] [--repeats 5]
    PYTHONPATH=OLD_CHECKOUT/src .venv/bin/python bench/db_path.py   # the same for another commit
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import fleet_scale as fs  # noqa: E402  # the bench's shared helpers: hub, database, processes
import update_path as up  # noqa: E402  # enrollment and assignment as the update-path bench does them

from edgefleet.agent.client import DeviceClient  # noqa: E402
from edgefleet.hub.context import Hub  # noqa: E402
from edgefleet.hub.datadir import load_keys  # noqa: E402
from edgefleet.hub.db import Store  # noqa: E402
from edgefleet.hub.records import Device  # noqa: E402
from edgefleet.hub.services import device_state, devices, director, events  # noqa: E402
from edgefleet.hub.settings import HubSettings  # noqa: E402
from edgefleet.protocol import DeviceEvents  # noqa: E402

Call = Callable[[int], None]


def calls(hub: Hub, records: list[Device]) -> dict[str, Call]:
    """The measured calls, each taking the call's number (devices in turn)."""
    count = len(records)
    seq = dict.fromkeys((d.id for d in records), 0)

    def caller(device: Device) -> devices.DeviceCaller:
        expires = hub.clock() + timedelta(minutes=5)
        return devices.DeviceCaller(device=device, jti=secrets.token_hex(16), token_expires=expires)

    def bare(_i: int) -> None:
        with hub.store.transaction(readonly=True) as tx:
            tx.ping()

    def record(i: int) -> None:
        devices.load_device(hub, records[i % count].id)

    def target(i: int) -> None:
        device_state.target_state(hub, records[i % count].id)

    def resign(i: int) -> None:
        device = records[i % count]
        with hub.store.transaction() as tx:  # as `director.refresh` once the device's answers changed
            tx.lock_repository()
            wanted, root = director._wanted(tx, device), tx.latest_metadata(director.ROOT_ROLE)
            _, files = director._fresh_until(hub, tx, device, wanted, root)
            director._resign(hub, tx, device, wanted, files, root)

    def event(i: int) -> None:
        device = records[i % count]
        seq[device.id] += 1
        batch = {"events": [{**up.event(None, "sensor", "committed", to_release="1.0.0"), "seq": seq[device.id]}]}
        events.record_events(hub, caller(device), DeviceEvents.model_validate(batch))

    latest = {d.id: d for d in records}

    def report(i: int) -> None:
        device = latest[records[i % count].id]
        twin = {"agent_version": f"bench-{i // count % 2}"}  # each call changes the device's twin
        latest[device.id] = devices.update_reported(hub, caller(device), device.id, twin)

    return {"bare": bare, "record": record, "target": target, "resign": resign, "events": event, "report": report}


def measure(call: Call, count: int, repeats: int) -> list[float]:
    """This process's CPU per call, ms, once per repeat."""
    call(0)  # statements compiled and cached before measuring
    runs = []
    for _ in range(repeats):
        started = time.process_time()
        for i in range(count):
            call(i)
        runs.append(1000 * (time.process_time() - started) / count)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    started = datetime.now(UTC)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgefleet-db-path-")))
        database_url = stack.enter_context(fs.fresh_postgres())
        served = stack.enter_context(fs.running_hub(scratch, database_url))
        fs.publish(served, scratch)
        http = httpx.Client(base_url=served.url, verify=str(served.ca), timeout=60)
        stack.callback(http.close)
        client = DeviceClient(http)  # enrollment only
        enrolled = up.enroll_all(served, scratch / "devices", args.devices, client)
        for device in enrolled:
            up.assign(served, device, up.VERSIONS[0])
        store = Store(served.sqlalchemy_url())
        stack.callback(store.dispose)
        settings = HubSettings(data_dir=served.data_dir, database_url=served.sqlalchemy_url())
        hub = Hub(settings=settings, store=store, keys=load_keys(served.data_dir))
        with store.transaction(readonly=True) as tx:
            records = [tx.get_device(d.id) for d in enrolled]
        found = [d for d in records if d is not None]
        load = fs.loadavg()
        runs = {name: measure(call, args.calls, args.repeats) for name, call in calls(hub, found).items()}
    bare = statistics.median(runs["bare"])
    summary: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": fs.machine(),
        "load": [load, fs.loadavg()],
        "devices": args.devices,
        "calls": args.calls,
        "repeats": args.repeats,
        "cpu_ms_per_call": {
            name: {
                "median": round(statistics.median(r), 3),
                "min": round(min(r), 3),
                "in_bare_units": round(statistics.median(r) / bare, 1),
            }
            for name, r in runs.items()
        },
    }
    print(json.dumps(summary, indent=2))
    print("\n| call | CPU per call, ms: median (min) | in bare units |")
    print("| --- | --- | --- |")
    for name, figures in summary["cpu_ms_per_call"].items():
        print(f"| {name} | {figures['median']} ({figures['min']}) | {figures['in_bare_units']} |")


if __name__ == "__main__":
    main()
