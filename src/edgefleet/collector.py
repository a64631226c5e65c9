"""Garbage-collector pacing for processes that hold many long-lived objects (hub processes, the simulator).

CPython collects its youngest generation once the allocations of tracked objects minus their
deallocations pass a threshold, and older generations after so many younger collections. A hub
worker or a simulator of 10,000 devices holds a connection, a task and a held poll per device,
and every held poll's objects live a minute: so the objects that survive a moment tend to live a
minute, then die, and the generational hypothesis fails twice. With CPython's thresholds the
whole heap was traversed again and again (the collector took 30 % of a simulator and 45 % of a
hub worker's main thread in a profile of the 20k-device benchmark). With the thresholds raised
(50,000 allocations), the count hardly moved, because every held poll ending frees as many
objects as a new one makes, while the young generation's list kept every object made since the
last collection and still alive, about all of the held polls: each young collection traversed
them and stopped a worker for 0.8 s, each middle one 2.4 s (run E in docs/benchmarks.md).

So collections here run on a clock, not on counts (`pace_collector`): the young generation every
`YOUNG_EVERY` second, so each traverses only one second's survivors, and the whole heap every
`FULL_EVERY` seconds; nothing is collected automatically in between. The middle generation then
holds every survivor until the next full collection: cyclic garbage that outlived one young
collection (a poll that ended in an exception, with its traceback) is freed by the full one,
so a process holds more of it meanwhile, and the full collection is a long pause, seldom. What
exists when the clock starts (modules, settings) is frozen out of every collection: call it
first in a process, before threads start; a frozen object that later ends in a reference cycle
is never freed, a one-time cost. `bench/collector_pauses.py` compares the ways.

A collection stops every thread of its process while it runs: `watch_pauses` times each
collection (`gc.callbacks`), so a process can say how long and how often it stopped (the hub
exports them as a Prometheus histogram).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from typing import Any, NamedTuple

YOUNG_EVERY = 1.0
"""Seconds between collections of the youngest generation (each traverses what survived since)."""
FULL_EVERY = 600.0
"""Seconds between collections of the whole heap (each a long pause, which frees the cycles that aged)."""


class Clock:
    """A daemon thread that collects the young generation every `young_every` s and everything every `full_every` s."""

    def __init__(self, young_every: float, full_every: float) -> None:
        if not 0 < young_every <= full_every:
            raise ValueError(f"need 0 < young_every <= full_every, not {young_every} and {full_every}")
        self.young_every = young_every
        self.full_every = full_every
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector-clock", daemon=True)

    def start(self) -> Clock:
        """Start collecting; returns itself."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop collecting (the thread ends after the collection in progress, if any)."""
        self._stopping.set()
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        last_full = time.monotonic()
        while not self._stopping.wait(self.young_every):
            if time.monotonic() - last_full >= self.full_every:
                gc.collect(2)
                last_full = time.monotonic()
            else:
                gc.collect(0)


_clock: Clock | None = None
_clocking = threading.Lock()


def pace_collector(*, young_every: float = YOUNG_EVERY, full_every: float = FULL_EVERY) -> Clock:
    """Collect on a clock in this process from now on, and never look again at the objects that exist now.

    Once per process: a later call returns the clock already running (its intervals unchanged).
    """
    global _clock  # one clock per process: the collector is per process
    with _clocking:
        if _clock is None:
            gc.collect()
            gc.freeze()
            gc.set_threshold(0)  # no automatic collection; gc.isenabled() stays true
            _clock = Clock(young_every, full_every).start()
        return _clock


KEPT_PAUSES = 10_000
"""Collections kept until read; older ones are dropped (counted in `Pauses.dropped`)."""


class Pause(NamedTuple):
    """One collection: its generation, how long it stopped the process, and the CPU its thread spent in it.

    The two differ when the process was not running meanwhile (a busy machine): every thread
    of the process waited for the whole `seconds` either way.
    """

    generation: int
    seconds: float
    cpu_seconds: float


class Pauses:
    """The collections of this process since last read, oldest first.

    Kept by a `gc.callbacks` hook, which must not take a lock (a collection can start while
    its thread holds any lock): a bounded deque's append and popleft are atomic, and CPython
    runs one collection at a time. One per process (`watch_pauses`): two readers in one
    process (two apps in a test) each take a share.
    """

    def __init__(self) -> None:
        self._done: deque[Pause] = deque(maxlen=KEPT_PAUSES)
        self._started: tuple[float, float] | None = None
        self.dropped = 0
        """Collections dropped unread since the process began (the deque was full)."""

    def hook(self, phase: str, info: dict[str, Any]) -> None:
        """`gc.callbacks` entry: note when a collection starts, and how long it took when it stops."""
        now, cpu = time.perf_counter(), time.thread_time()
        if phase == "start":
            self._started = (now, cpu)
            return
        started, self._started = self._started, None
        if started is None:
            return  # hooked while a collection ran: its start is unknown
        if len(self._done) == KEPT_PAUSES:
            self.dropped += 1
        self._done.append(Pause(int(info.get("generation", 2)), now - started[0], cpu - started[1]))

    def take(self) -> list[Pause]:
        """The collections since the last call (each is returned once)."""
        taken = []
        while self._done:
            try:
                taken.append(self._done.popleft())
            except IndexError:  # pragma: no cover - emptied by another reader meanwhile
                break
        return taken


_pauses: Pauses | None = None
_watching = threading.Lock()


def watch_pauses() -> Pauses:
    """Time this process's collections from now on (once per process; later calls return the same)."""
    global _pauses  # one hook per process: gc.callbacks is per process
    with _watching:
        if _pauses is None:
            _pauses = Pauses()
            gc.callbacks.append(_pauses.hook)
        return _pauses
