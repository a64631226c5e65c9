"""Garbage-collector pacing for processes that hold many long-lived objects (hub processes, the simulator).

CPython collects its youngest generation every 700 net allocations and the whole heap once the
objects promoted since the last full collection reach a quarter of it. A simulator of 10,000 devices
holds a connection, a task and a held poll per device, and every held poll's objects live a minute,
so they reach the oldest generation and the whole heap was traversed again and again: in a profile
of the 20k-device benchmark the collector took 30 % of a simulator's time, and 45 % of a hub
worker's main thread (each holds 10,000 connections and its per-device caches). Collections here are
rarer: the young generation every `YOUNG` allocations (a request's own objects then mostly die
before one), so the whole heap at most once per `YOUNG * MIDDLE * OLD` (10 million) allocations
instead of 70,000, CPython's rule that a quarter of it be new since the last still applying; what
exists when it is called (modules, settings) is frozen out of every collection. Cyclic garbage is
still collected, only in larger batches: memory stays bounded.
"""

from __future__ import annotations

import gc

YOUNG = 50_000
"""Net allocations between collections of the youngest generation (CPython: 700)."""
MIDDLE = 20
"""Young collections between collections of the middle generation (CPython: 10)."""
OLD = 10
"""Middle collections before the whole heap may be collected (as CPython)."""


def pace_collector(young: int = YOUNG, middle: int = MIDDLE, old: int = OLD) -> None:
    """Collect less often in this process, and never look again at the objects that exist now."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, middle, old)
