"""Benchmark (issue 16 point 5): the collector's pauses in a process that holds many long polls.

A hub worker or a simulator of 10,000 devices holds a poll per device for about a minute, so
objects that survive a moment tend to live a minute, then die: the generational hypothesis
fails. This stands in for such a process without a network: a main thread that, every
millisecond, starts the polls due (each a cluster of `--objects` tracked objects, held
`--hold` seconds, one in `--cyclic` ending as a reference cycle, as an exception with its
traceback does), ends those expired and makes a request's short-lived garbage, and notes how
late each tick was. It runs each way of collecting in a fresh process for `--duration` seconds:

- `default`: CPython's thresholds (700, 10, 10);
- `count`: `edgefleet.collector.pace_collector()`, as the hub and the simulator use it (50,000,
  20, 10, what existed frozen);
- `clock`: what run F of docs/benchmarks.md tried: nothing collected automatically, the young
  generation every second from a thread and the whole heap every `--full-every` seconds.

In the 20k-device case the clock was worse than `count` (its young collections each traversed
a second's survivors, nearly every new held poll's objects, so 4 times the work; and the full
ones stopped a worker for about 4 s): this shows why on a small scale.

It prints, per way, the collections by generation (count, median and longest pause, CPU), the
share of the time collecting, the main loop's late ticks (p99, p99.9 and longest lateness: what a
request in flight then waits) and the RSS at the end.

    .venv/bin/python bench/collector_pauses.py --polls 10000 --hold 30 --duration 90
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from edgefleet.collector import Pause, pace_collector, watch_pauses

WAYS = ("default", "count", "clock")


class Frame:
    """A stand-in for a coroutine frame or a request object: tracked, with a few references."""

    def __init__(self, parent: object | None, index: int) -> None:
        self.parent = parent
        self.index = index
        self.headers = [(b"x-%d" % index, b"v")]


def poll(objects: int, cyclic: bool) -> list[object]:
    """One held poll's objects (dicts, lists, tuples, instances), optionally left in a reference cycle."""
    cluster: list[object] = []
    parent: object | None = None
    for index in range(objects // 4):
        frame = Frame(parent, index)
        cluster.append(frame)
        cluster.append({"scope": index, "frame": frame})
        cluster.append((frame, index))
        parent = frame
    if cyclic:
        cluster.append(cluster)  # the poll ends as garbage that only the collector frees
    return cluster


def run(
    way: str, polls: int, hold: float, objects: int, cyclic: int, duration: float, full_every: float
) -> dict[str, object]:
    """One way of collecting, in this process: its pauses, the loop's lateness and the RSS at the end."""
    if way == "count":
        pace_collector()
    elif way == "clock":
        gc.collect()
        gc.freeze()
        gc.set_threshold(0)
        threading.Thread(target=clock, args=(full_every,), daemon=True).start()
    pauses = watch_pauses()
    held: deque[tuple[float, list[object]]] = deque()
    rate = polls / hold
    started = time.perf_counter()
    tick = 0.001
    late: list[float] = []
    due = started
    made = 0
    while (now := time.perf_counter()) - started < duration:
        late.append(max(0.0, now - due))
        due = max(due, now)  # a late tick is counted once, not again in every tick after it
        while held and held[0][0] <= now:
            held.popleft()
        # Ramp up for the first `hold` seconds, as devices come online, then keep `polls` held.
        target = int((now - started) * rate)
        while made < target:
            made += 1
            held.append((now + hold, poll(objects, made % cyclic == 0)))
        garbage = [{"request": n, "body": [n, n + 1]} for n in range(20)]  # a request's short-lived objects
        del garbage
        due += tick
        time.sleep(max(0.0, due - time.perf_counter()))
    measured = late[int(len(late) * hold / duration) :]  # after the ramp
    taken = pauses.take()
    return {
        "way": way,
        "collections": summarize(taken, elapsed=time.perf_counter() - started),
        "late_ms": {
            "p99": round(quantile(measured, 0.99) * 1000, 1),
            "p999": round(quantile(measured, 0.999) * 1000, 1),
            "max": round(max(measured) * 1000, 1),
        },
        "rss_mib": round(rss_kib() / 1024, 1),
    }


def clock(full_every: float) -> None:
    """The young generation every second, the whole heap every `full_every` seconds (run F's way)."""
    last_full = time.monotonic()
    while True:
        time.sleep(1.0)
        if time.monotonic() - last_full >= full_every:
            gc.collect(2)
            last_full = time.monotonic()
        else:
            gc.collect(0)


def summarize(taken: list[Pause], *, elapsed: float) -> dict[str, object]:
    """Per generation: how many, median and longest pause (ms), CPU (s), share of the time."""
    out: dict[str, object] = {}
    for generation in (0, 1, 2):
        mine = [pause for pause in taken if pause.generation == generation]
        if not mine:
            continue
        seconds = [pause.seconds for pause in mine]
        out[str(generation)] = {
            "count": len(mine),
            "median_ms": round(statistics.median(seconds) * 1000, 2),
            "max_ms": round(max(seconds) * 1000, 1),
            "cpu_s": round(sum(pause.cpu_seconds for pause in mine), 2),
            "share": round(sum(seconds) / elapsed, 4),
        }
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=10_000, help="polls held at once")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds each poll is held")
    parser.add_argument("--objects", type=int, default=80, help="tracked objects per poll")
    parser.add_argument("--cyclic", type=int, default=10, help="one poll in this many ends as a cycle")
    parser.add_argument("--duration", type=float, default=90.0, help="seconds per way")
    parser.add_argument("--full-every", type=float, default=600.0, help="the clock's seconds between full collections")
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated, of " + ", ".join(WAYS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one way in this process (the child)
    args = parser.parse_args()
    if not 0 < args.hold < args.duration:
        parser.error("--hold must be shorter than --duration (the figures are taken after the ramp)")
    if args.one:
        print(
            json.dumps(run(args.one, args.polls, args.hold, args.objects, args.cyclic, args.duration, args.full_every))
        )
        return
    print(json.dumps({"polls": args.polls, "hold": args.hold, "objects": args.objects, "duration": args.duration}))
    for way in args.ways.split(","):
        child = [sys.executable, __file__, "--one", way, *sys.argv[1:]]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        print(done.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
