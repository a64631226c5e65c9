"""Runs a simulation: the banner, bounded enrollment, every device's loop, periodic summaries, a clean stop.

Devices enroll through the worker pool (so at most a few enrollments run at a time) and
start their loops as soon as they are enrolled; devices found enrolled in `state_dir`
from an earlier run start spread over `ramp` seconds instead. The simulation ends when
`stop` is set (SIGINT, SIGTERM) or after `duration`: every device task is cancelled, the
connections closed and the workers stopped; the final summary follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from edgefleet.agent.identity import load_identity
from edgefleet.agent.policy import Policy, PolicyError, load_policy
from edgefleet.agent.runner import next_delay
from edgefleet.collector import pace_collector
from edgefleet.sim.device import Shared, SimDevice
from edgefleet.sim.errors import EnrollmentRefusedError, SimAbortedError, SimError, SimSetupError
from edgefleet.sim.link import Link, open_links
from edgefleet.sim.pool import WorkPool
from edgefleet.sim.settings import SHARD_SIZE, SimSettings
from edgefleet.sim.stats import Counters, DeviceState, DeviceView, Snapshot, snapshot, summary_json, summary_line
from edgefleet.sim.work import EnrollJob, WorkerSetup, enroll_device
from edgefleet.tlsbuffers import limit_tls_read_buffers

log = logging.getLogger(__name__)
STATE_FILE = "sim.json"
BANNER = """\
edgefleet sim: a SIMULATOR, for load tests and demos. Not real devices.
  {devices} simulated devices enroll with {hub} and speak the agent's own protocol (signed requests,
  long-poll, TUF and director verification, update events, twin reports); their container engine
  is simulated: no container runs, no image is pulled. Updates fail at a rate of {fail_rate}
  (fixed by seed {seed}); {offline:.0%} of the devices are offline in each {period:.0f} s period."""


def banner(settings: SimSettings) -> str:
    return BANNER.format(
        devices=settings.devices,
        hub=settings.hub_url,
        fail_rate=settings.fail_rate,
        seed=settings.seed,
        offline=settings.offline,
        period=settings.offline_period,
    )


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard one (one connection per device); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def state_root(settings: SimSettings) -> tuple[Path, bool]:
    """Where the devices' state lives, and whether it is a temporary directory (removed at the end).

    Raises:
        SimSetupError: the state directory belongs to another hub, or is unusable.
    """
    if settings.state_dir is None:
        return Path(tempfile.mkdtemp(prefix="edgefleet-sim-")), True
    root = settings.state_dir
    marker = root / STATE_FILE
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if marker.exists():
            hub = json.loads(marker.read_text()).get("hub_url")
            if hub != settings.hub_url:
                raise SimSetupError(f"{root} holds devices enrolled with {hub}, not {settings.hub_url}")
        else:
            marker.write_text(json.dumps({"hub_url": settings.hub_url}) + "\n")
    except (OSError, ValueError, AttributeError) as exc:
        raise SimSetupError(f"state directory {root} is unusable: {exc}") from exc
    return root, False


class Simulation:
    """One run of the simulator: its devices, counters and output."""

    def __init__(
        self, settings: SimSettings, *, out: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.out = out
        self.clock = clock
        self.counters = Counters()
        self.devices: list[SimDevice | None] = [None] * settings.devices
        self._states: list[DeviceState] = ["enrolling"] * settings.devices
        self._error: SimError | None = None
        self._stop = asyncio.Event()
        self._started = clock()

    def views(self) -> Iterator[DeviceView]:
        for device, state in zip(self.devices, self._states, strict=True):
            yield device.view() if device is not None else DeviceView(state=state, updating=False, running={})

    def snapshot(self) -> Snapshot:
        return snapshot(self.clock() - self._started, self.views(), self.counters)

    def _policy(self) -> Policy:
        if self.settings.policy is None:
            return Policy()  # the agent's default: nothing granted
        try:
            return load_policy(self.settings.policy)
        except PolicyError as exc:
            raise SimSetupError(str(exc)) from exc

    async def run(self, stop: asyncio.Event) -> dict[str, Any]:
        """Simulate until `stop` is set or `duration` has passed; returns the JSON summary.

        Raises:
            SimSetupError: the simulation could not start (state directory, policy, enrollment refused).
            SimAbortedError: the worker processes died.
        """
        s = self.settings
        policy = self._policy()
        root, temporary = state_root(s)
        self.out(banner(s))
        links = open_links(s, self.counters, fd_limit=raise_fd_limit())
        work = WorkPool(
            workers=s.verify_workers,
            setup=WorkerSetup(hub_url=s.hub_url, ca=s.ca, timeout=s.request_timeout),
            counters=self.counters,
        )
        self._started = self.clock()
        shared = Shared(settings=s, counters=self.counters, work=work, policy=policy, started=self._started)
        tasks = [asyncio.create_task(self._life(i, root, links, shared)) for i in range(s.devices)]
        summaries = asyncio.create_task(self._summaries())
        try:
            stopping = asyncio.create_task(stop.wait())
            aborted = asyncio.create_task(self._stop.wait())
            await asyncio.wait({stopping, aborted}, timeout=s.duration, return_when=asyncio.FIRST_COMPLETED)
            for waiter in (stopping, aborted):
                waiter.cancel()
        finally:
            for task in (*tasks, summaries):
                task.cancel()
            await asyncio.gather(*tasks, summaries, return_exceptions=True)
            await asyncio.gather(*(link.aclose() for link in links), return_exceptions=True)
            await asyncio.to_thread(work.close)
            final = self.snapshot()
            self.out(summary_line(final))
            if temporary:
                await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)
        if self._error is not None:
            raise self._error
        own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = {"simulator": own.ru_utime + own.ru_stime, "workers": workers.ru_utime + workers.ru_stime}
        return summary_json(final, self.counters, cpu_seconds=cpu)

    async def _summaries(self) -> None:
        before = None
        while True:
            await asyncio.sleep(self.settings.summary_interval)
            now = self.snapshot()
            self.out(summary_line(now, before))
            before = now

    def _abort(self, error: SimError) -> None:
        if self._error is None:
            self._error = error
        self._stop.set()

    async def _life(self, index: int, root: Path, links: list[Link], shared: Shared) -> None:
        """Enroll device `index` (or find it enrolled), then run it until cancelled."""
        s = self.settings
        data_dir = root / "devices" / f"{index:06d}"
        job = EnrollJob(data_dir=data_dir, token=s.token, arch=s.arch, hostname=f"sim-{index:06d}")
        try:
            for attempt in range(s.enroll_attempts):
                enrolled = await shared.work.run("enroll", enroll_device, job)
                if enrolled.failure is None or not enrolled.failure.retry:
                    break
                await asyncio.sleep(next_delay(attempt, initial=s.backoff_initial, ceiling=s.backoff_max))
            if enrolled.failure is not None:
                self._states[index] = "stopped"
                failure = enrolled.failure
                if failure.kind in ("hub-refused", "not-accepted"):
                    self._abort(
                        EnrollmentRefusedError(
                            f"the hub refused to enroll device {index}: {failure.message} (--token must be an "
                            f"enrollment token for at least {s.devices} devices that needs no approval)"
                        )
                    )
                elif not failure.retry:
                    self._abort(SimSetupError(f"device {index} cannot enroll: {failure.message}"))
                else:
                    log.warning("device %d could not enroll: %s", index, failure.message)
                return
            identity = await asyncio.to_thread(load_identity, data_dir)
            device = SimDevice(
                index=index,
                data_dir=data_dir,
                identity=identity,
                link=links[index // SHARD_SIZE],
                shared=shared,
                restored=enrolled.restored,
                greet=not enrolled.fresh,
            )
            self.devices[index] = device
            self.counters.enrolled += 1
            delay = 0.0 if enrolled.fresh else s.ramp * index / s.devices - (self.clock() - self._started)
            await device.run(start_delay=max(0.0, delay))
        except BrokenProcessPool as exc:
            self._states[index] = "stopped"
            self._abort(SimAbortedError(f"the worker processes died: {exc}"))
        except Exception:  # a bug in one device must not end the others' simulation
            log.exception("simulated device %d crashed", index)
            self.counters.errors["crash"] += 1
            self._states[index] = "stopped"
            self.devices[index] = None


def simulate(settings: SimSettings, *, out: Callable[[str], None]) -> dict[str, Any]:
    """Run a simulation in a fresh event loop until SIGINT/SIGTERM or `duration`; returns the JSON summary.

    A second SIGINT while stopping interrupts the clean stop.

    Raises:
        SimSetupError: the simulation could not start.
        SimAbortedError: the simulation could not go on.
    """
    limit_tls_read_buffers()  # one connection per device: 16 KiB buffers, not 256 KiB each
    pace_collector()  # a heap of 10,000 devices' connections and held polls: collected seldom

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal() -> None:
            out("stopping (Ctrl-C again to stop at once)")
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)

        loop.add_signal_handler(signal.SIGINT, on_signal)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            return await Simulation(settings, out=out).run(stop)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())
