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
"""

from __future__ import annotations

import gc

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
