"""The worker processes that run the simulator's CPU-bound jobs (`sim.work`), and how asyncio waits on them.

Verification (signature checks, JSON and YAML parsing) and enrollment (key generation) cost
CPU; in worker processes they run beside the event loop instead of stalling it. The queue
is bounded: at most `queue` jobs wait or run at a time, the rest wait their turn in asyncio.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from edgefleet.sim.stats import Counters
from edgefleet.sim.work import JobResult, WorkerSetup, start_worker

Job = TypeVar("Job")
Result = TypeVar("Result", bound=JobResult)


class WorkPool:
    """A bounded process pool; each job's wall time (queue included) and hub requests are counted by kind."""

    def __init__(self, *, workers: int, setup: WorkerSetup, counters: Counters, queue: int | None = None) -> None:
        # Worker processes are spawned fresh: forking a process that runs an event loop and threads is unsafe.
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=start_worker,
            initargs=(setup,),
        )
        self._slots = asyncio.Semaphore(queue or 2 * workers)
        self._counters = counters

    async def run(self, kind: str, fn: Callable[[Job], Result], job: Job) -> Result:
        """`fn(job)` in a worker process, once a slot is free."""
        counters = self._counters
        counters.jobs_waiting += 1
        try:
            await self._slots.acquire()
        finally:
            counters.jobs_waiting -= 1
        counters.jobs_running += 1
        started = time.monotonic()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, fn, job)
        finally:
            counters.jobs_running -= 1
            self._slots.release()
        counters.job(kind, time.monotonic() - started)
        counters.requests[kind] += result.requests
        counters.errors[kind] += result.errors
        return result

    def close(self) -> None:
        """Stop the workers; jobs not started are dropped."""
        self._executor.shutdown(wait=True, cancel_futures=True)
