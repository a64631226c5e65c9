"""The garbage collector's pauses of a hub process as a Prometheus histogram, `edgefleet_gc_pause_seconds`.

A collection stops the process's event loop while it runs, so its pauses add to every request
in flight then (a full collection traverses the whole heap: a process holding 10,000 devices'
connections and caches has a large one). `edgefleet.collector.watch_pauses` notes each
collection; `export_pauses` moves them into the histogram every `EVERY` seconds, outside the
collector's hook (which may take no lock). With several worker processes, /metrics adds up
every process's.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter, Histogram

from edgefleet.collector import Pauses, watch_pauses

log = logging.getLogger(__name__)

EVERY = 5.0
"""Seconds between moves of the noted pauses into the histogram."""
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PauseMetrics:
    """The process's collections, by generation (0 young, 2 the whole heap), as seconds paused."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pauses: Pauses = watch_pauses()
        self.histogram = Histogram(
            "edgefleet_gc_pause_seconds",
            "Garbage collections of the hub's processes and how long each stopped its process",
            ["generation"],
            registry=registry,
            buckets=BUCKETS,
        )
        self.cpu = Counter(
            "edgefleet_gc_pause_cpu_seconds",
            "CPU the hub's processes spent in garbage collections (less than the pauses when the machine is busy)",
            ["generation"],
            registry=registry,
        )
        self.dropped = Counter(
            "edgefleet_gc_pauses_dropped_total",
            "Garbage collections of the hub's processes not timed: more than could be kept between two moves",
            registry=registry,
        )
        self._dropped_seen = self.pauses.dropped

    def move(self) -> int:
        """Move the collections noted since the last move into the histogram; how many."""
        taken = self.pauses.take()
        for pause in taken:
            self.histogram.labels(str(pause.generation)).observe(pause.seconds)
            self.cpu.labels(str(pause.generation)).inc(pause.cpu_seconds)
        dropped = self.pauses.dropped
        if dropped > self._dropped_seen:
            self.dropped.inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped
        return len(taken)


async def export_pauses(metrics: PauseMetrics, *, every: float = EVERY) -> None:
    """Every `every` seconds, `metrics.move()` (until cancelled); a failed move is logged and tried again."""
    while True:
        await asyncio.sleep(every)
        try:
            metrics.move()
        except Exception:  # a metric must not end the task: the app's shutdown awaits it
            log.exception("moving the collector's pauses into /metrics failed")
