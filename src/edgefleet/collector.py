"""Garbage-collector pacing for processes that hold many long-lived objects (hub processes, the simulator).

CPython collects its youngest generation once the net allocations of tracked objects pass 700 and
the whole heap once the objects promoted since the last full collection reach a quarter of it. A
simulator of 10,000 devices holds a connection, a task and a held poll per device, and every held
poll's objects live a minute, so they reach the oldest generation and the whole heap was traversed
again and again: in a profile of the 20k-device benchmark the collector took 30 % of a simulator's
time, and 45 % of a hub worker's main thread (each holds 10,000 connections and its per-device
caches). Collections here are rarer: the young generation after `YOUNG` net allocations, so
objects that live a moment are seldom traversed, and the whole heap at most once per about
`YOUNG * MIDDLE * OLD` (about 11 million) instead of about 85,000, CPython's quarter rule still
applying. What exists when it is called (modules, settings) is frozen out of every collection: call
it first in a process, before threads start; a frozen object that later ends in a reference cycle
is never freed, a one-time cost. Cyclic garbage is still collected, later and in larger batches,
so a paced process holds more of it between collections. The thresholds' meaning is CPython
3.11's and 3.12's.

A collection stops every thread of its process while it runs, and a full one traverses the
whole heap: `watch_pauses` times each collection (`gc.callbacks`), so a process can say how
long and how often it stopped (the hub exports them as a Prometheus histogram).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from typing import Any, NamedTuple

YOUNG = 50_000
"""Net allocations between collections of the youngest generation (CPython: 700)."""
MIDDLE = 20
"""Young collections between collections of the middle generation (CPython: 10)."""
OLD = 10
"""Middle collections before the whole heap may be collected (as CPython)."""


def pace_collector(*, young: int = YOUNG, middle: int = MIDDLE, old: int = OLD) -> None:
    """Collect less often in this process, and never look again at the objects that exist now."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, middle, old)


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
