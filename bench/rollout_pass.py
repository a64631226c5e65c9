"""Benchmark (issue 16, point 2): a scheduler pass and a deployment's status, by fleet size and by change.

A hub data directory and two releases are made with the CLI on a fresh PostgreSQL database
(`hub init`, `hub serve` until the releases are pushed, then stopped); then, in this process,
a `Hub` on that database with its change listener, as `hub serve` runs it. Per fleet size
(accepted devices written straight to the registry, all selected by one deployment with
waves 1%,10%,100%, held in its first wave), medians over `--passes`:

- a pass when nothing changed, and when K devices changed their twin since the last one
  (K = 10 and 100; each change announced as the device path announces it);
- a pass that reads the whole fleet (the view told that every device changed): what every
  pass cost before the fleet view, measured in the same run;
- a deployment's status computed anew, and shared (a second viewer within the second).

Per figure: wall and this process's CPU in ms, and the devices the view read. The cost of a
pass should follow K, not the fleet; the full read follows the fleet.

    .venv/bin/python bench/rollout_pass.py [--sizes 1000,5000,20000] [--passes 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import fleet_scale as fs  # noqa: E402  # the bench's shared helpers: hub, database, processes

from edgefleet.hub.context import Hub  # noqa: E402
from edgefleet.hub.datadir import load_keys  # noqa: E402
from edgefleet.hub.db import Store  # noqa: E402
from edgefleet.hub.db.listen import CHANNEL  # noqa: E402
from edgefleet.hub.records import Device  # noqa: E402
from edgefleet.hub.services import deployments, rollouts  # noqa: E402
from edgefleet.hub.services.operators import Operator  # noqa: E402
from edgefleet.hub.settings import HubSettings  # noqa: E402

ADMIN = Operator(user="bench", role="admin", token_id="bench")  # noqa: S106  # an id, not a secret
CHANGES = (10, 100)
_random = secrets.SystemRandom()


def add_devices(hub: Hub, count: int) -> list[str]:
    """`count` accepted arm64 devices tagged env=prod, written in batches."""
    now = datetime.now(UTC)
    ids = []
    for start in range(0, count, 2000):
        with hub.store.transaction() as tx:
            for _ in range(min(2000, count - start)):
                device_id = str(uuid.uuid4())
                tx.insert_device(
                    Device(
                        id=device_id,
                        fleet="bench",
                        tags={"env": "prod", "site": f"s{secrets.randbelow(50)}"},
                        status="accepted",
                        arch="arm64",
                        hostname=None,
                        public_key_pem="bench",
                        key_fingerprint=secrets.token_hex(32),
                        cert_pem=None,
                        cert_serial=None,
                        cert_not_after=None,
                        enrollment_token_id=None,
                        enrolled_at=now,
                        updated_at=now,
                        last_seen_at=now,
                        reported={"apps": {"sensor": {"version": "1.0.0", "services": {}}}},
                    )
                )
                ids.append(device_id)
    return ids


def caught_up(hub: Hub, database_url: str) -> None:
    """Wait until the listener has heard every change committed so far (a marker arrives after them)."""
    marker = f"marker-{uuid.uuid4()}"
    heard: list[str] = []
    hub.notifier.watch(lambda ids: heard.extend(ids or ()))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, marker))
    deadline = time.monotonic() + 10
    while marker not in heard:
        if time.monotonic() > deadline:
            raise SystemExit("the listener did not hear its marker")
        time.sleep(0.005)


def change(hub: Hub, device_ids: list[str], serial: int) -> None:
    """Each device reports a changed twin (the same column, announced, as the device path writes it)."""
    with hub.store.transaction() as tx:
        for device_id in device_ids:
            tx.update_device(device_id, reported={"apps": {"sensor": {"version": "1.0.0"}}, "uptime": serial})


def timed(run: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def median_of(samples: list[tuple[float, float, int]]) -> dict[str, float]:
    return {
        "wall_ms": round(statistics.median(s[0] for s in samples), 2),
        "cpu_ms": round(statistics.median(s[1] for s in samples), 2),
        "read": statistics.median(s[2] for s in samples),
    }


def measure(hub: Hub, database_url: str, devices: list[str], passes: int) -> dict[str, Any]:
    view = hub.fleet
    figures: dict[str, Any] = {}

    def one(prepare: Callable[[], None], run: Callable[[], Any]) -> tuple[float, float, int]:
        prepare()
        caught_up(hub, database_url)
        reads = view.reads
        wall, cpu = timed(run)
        return wall, cpu, view.reads - reads

    def tick() -> None:
        rollouts.tick(hub, wait=True)

    for _ in range(3):  # settle: newcomers joined, what was assigned read again
        one(lambda: None, tick)
    figures["pass, nothing changed"] = median_of([one(lambda: None, tick) for _ in range(passes)])
    serial = 0
    for count in CHANGES:
        samples = []
        for _ in range(passes):
            serial += 1
            chosen = _random.sample(devices, count)
            samples.append(one(lambda c=chosen, s=serial: change(hub, c, s), tick))  # type: ignore[misc]
        figures[f"pass, {count} changed"] = median_of(samples)
    figures["pass, whole fleet read (as before)"] = median_of(
        [one(lambda: view.changed(None), tick) for _ in range(max(3, passes // 3))]
    )
    name = "bench"

    def status_anew() -> None:
        hub.statuses.clear()

    figures["status, computed"] = median_of(
        [one(status_anew, lambda: deployments.status(hub, ADMIN, name)) for _ in range(passes)]
    )
    deployments.status(hub, ADMIN, name)
    figures["status, shared"] = median_of(
        [one(lambda: None, lambda: deployments.status(hub, ADMIN, name)) for _ in range(passes)]
    )
    figures["targeted"] = deployments.status(hub, ADMIN, name).targeted
    return figures


def table(results: dict[str, dict[str, Any]]) -> str:
    sizes = list(results)
    rows = [k for k in results[sizes[0]] if k != "targeted"]
    head = "| | " + " | ".join(f"{int(s):,} devices" for s in sizes) + " |"
    lines = [head, "|---" * (len(sizes) + 1) + "|"]
    for row in rows:
        figures = [results[s][row] for s in sizes]
        cells = [f"{f['wall_ms']} ms wall, {f['cpu_ms']} ms CPU, {f['read']:g} read" for f in figures]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--passes", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load = fs.loadavg()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rollout-pass-") as tmp, fs.fresh_postgres() as database_url:
        scratch = Path(tmp)
        with fs.running_hub(scratch, database_url) as served:
            fs.publish(served, scratch)
        settings = HubSettings(data_dir=served.data_dir, database_url=database_url)
        store = Store(settings.sqlalchemy_url())
        hub = Hub(settings=settings, store=store, keys=load_keys(served.data_dir))
        listener = store.listener()
        assert listener is not None
        listener.start()
        hub.caches.use_while(lambda: listener.listening.is_set())
        if not listener.listening.wait(10):
            raise SystemExit("the listener did not connect")
        try:
            devices: list[str] = []
            for size in sizes:
                devices += add_devices(hub, size - len(devices))
                if len(devices) == size and "bench" not in {d.name for d in _deployments(hub)}:
                    spec = deployments.make_spec(
                        name="bench",
                        app="sensor",
                        version="1.1.0",
                        target="env=prod",
                        priority=0,
                        waves="1%,10%,100%",
                        bake_seconds=0,
                        wave_timeout_seconds=86400,
                        max_failure="10%",
                        on_failure="pause",
                    )
                    deployments.create(hub, ADMIN, spec)
                results[str(size)] = measure(hub, database_url, devices, args.passes)
                print(f"{size} devices: {json.dumps(results[str(size)])}", flush=True)
        finally:
            listener.stop()
            store.dispose()
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({platform.machine()}, {fs.os.cpu_count()} CPUs)",
        "load_before": load,
        "load_after": fs.loadavg(),
        "results": results,
    }
    print(table(results))
    print(f"load average before {load}, after {report['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _deployments(hub: Hub) -> list[Any]:
    with hub.store.transaction(readonly=True) as tx:
        return tx.list_deployments()


if __name__ == "__main__":
    main()
