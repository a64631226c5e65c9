"""One simulated device: the agent's loop (`agent.runner`) on asyncio, over the simulated engine.

Each cycle is the agent's: deliver buffered events, long-poll `/device/target` with its
ETag; when the answer changed (or an update that could not be carried out is due again),
verify the director's assignment and each release in a worker process (`sim.work`: the
agent's verification code), move each app on the simulated engine (`sim.engine`: the agent's
own update plan carried out in memory, with waits instead of downloads and health windows,
failing as the seed decides), keep each outcome as the agent's own
update event, and report. Besides, every `report_interval` seconds, a state report if it is
due as the agent's is (changed, or unchanged for 10 minutes: `agent.report`). While
the hub is unreachable the device backs off as the agent does (exponential, full jitter,
capped); during its offline periods (`sim.chance.connectivity`) it sends nothing, and a
request in flight when one begins is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edgefleet import __version__
from edgefleet.agent.bounds import DEFAULT_BOUNDS
from edgefleet.agent.decide import Installed
from edgefleet.agent.errors import DeviceNotAcceptedError, HubRefusedError, HubUnreachableError
from edgefleet.agent.identity import LocalIdentity
from edgefleet.agent.policy import Policy
from edgefleet.agent.report import app_reports, report_due
from edgefleet.agent.runner import (
    REFUSED_FOR_GOOD,
    LocalState,
    event,
    next_delay,
    printable,
    save_state,
)
from edgefleet.protocol import MAX_REASON_CHARS, ReportedState
from edgefleet.sim.chance import connectivity, draw
from edgefleet.sim.engine import SimEngine, carry_out, course
from edgefleet.sim.errors import DeviceOfflineError
from edgefleet.sim.link import Link
from edgefleet.sim.outbox import MemoryOutbox
from edgefleet.sim.pool import WorkPool
from edgefleet.sim.settings import SimSettings
from edgefleet.sim.stats import Counters, DeviceState, DeviceView, Step
from edgefleet.sim.work import Candidate, Failure, Restored, VerifyJob, verify_device

log = logging.getLogger(__name__)
T = TypeVar("T")
SIMULATOR = "edgefleet sim"
"""Named in every simulated device's reports, so no one takes it for a real one."""
SIMULATED_DISK_FREE = 8 * 1024**3
SIMULATED_MEMORY = 512 * 1024**2


@dataclass
class Shared:
    """What every device of one simulation uses: settings, counters, the worker pool, the clock."""

    settings: SimSettings
    counters: Counters
    work: WorkPool
    policy: Policy
    started: float
    """`clock()` when the simulation started: offline periods count from it."""
    clock: Callable[[], float] = time.monotonic


@dataclass
class SimDevice:
    """One enrolled device's state and loop."""

    index: int
    data_dir: Path
    identity: LocalIdentity
    link: Link
    shared: Shared
    restored: Restored | None = None
    greet: bool = False
    """Ask the hub which event it recorded last before sending any (the device enrolled in an earlier run)."""
    state: DeviceState = "waiting"
    step: Step | None = None
    """Where its cycle is now (None: between cycles); the summaries count devices per step."""
    installed: dict[str, Installed] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    engine: SimEngine = field(default_factory=SimEngine)
    outbox: MemoryOutbox = field(default_factory=MemoryOutbox)
    etag: str | None = None
    last_error: str | None = None
    retry: bool = False
    retry_at: float = 0.0
    retries: int = 0
    reported: tuple[dict[str, Any], float] | None = None
    """The last state report the hub took, and when (`Shared.clock`): an unchanged one is not sent again."""
    _delivering: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _rand: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rand = random.Random(f"{self.shared.settings.seed}:{self.index}")  # noqa: S311  # jitter, not secrets
        if self.restored is not None:
            self.installed = dict(self.restored.apps)
            self.failed = dict(self.restored.failed)
            self.environment = dict(self.restored.environment)
            self.engine = SimEngine(self.restored.running)
            self.etag = self.restored.etag

    @property
    def settings(self) -> SimSettings:
        return self.shared.settings

    def view(self) -> DeviceView:
        running = {app: release.version for app, release in self.engine.running().items()}
        return DeviceView(state=self.state, updating=self.engine.updating(), running=running, step=self.step)

    # --- the loop -------------------------------------------------------------------------

    async def run(self, *, start_delay: float = 0.0) -> None:
        """Poll, update and report until cancelled (or the hub no longer accepts the device)."""
        self.state = "waiting"
        await asyncio.sleep(start_delay)
        reports = asyncio.create_task(self._reports())
        try:
            await self._cycles()
        finally:
            reports.cancel()
            await asyncio.gather(reports, return_exceptions=True)

    async def _cycles(self) -> None:
        attempt = 0
        while True:
            offline, lasting = self._connectivity()
            if offline:
                self.state = "offline"
                await asyncio.sleep(lasting)
                continue
            self.state = "online"
            try:
                await self.cycle()
                attempt = 0
            except DeviceOfflineError:
                continue
            except DeviceNotAcceptedError as exc:
                log.warning("device %s: %s; it stops", self.identity.device_id, exc)
                self.state = "stopped"
                return
            except HubUnreachableError:
                await self._back_off(attempt)
                attempt += 1
            except HubRefusedError as exc:  # not expected of a working hub: noted, and paced like an outage
                self.last_error = f"the hub refused: {exc}"[:500]
                await self._back_off(attempt)
                attempt += 1

    async def _back_off(self, attempt: int) -> None:
        """Wait as the agent does while the hub is away: full jitter, exponential, capped."""
        self.state = "backoff"
        s = self.settings
        delay = next_delay(attempt, initial=s.backoff_initial, ceiling=s.backoff_max, rand=self._rand.random)
        await asyncio.sleep(delay)

    async def _reports(self) -> None:
        """A state report every `report_interval`, the first at a point of it fixed by the seed."""
        interval = self.settings.report_interval
        await asyncio.sleep(interval * draw(self.settings.seed, "report", self.index))
        while True:
            if self.state == "online":
                await self.report()
            await asyncio.sleep(interval)

    async def cycle(self) -> None:
        """One deliver-poll-verify-update-report round (`Agent.cycle`).

        Raises:
            HubUnreachableError: the hub could not be reached (the caller backs off).
            DeviceOfflineError: the device's offline period began.
        """
        try:
            await self._cycle()
        finally:
            self.step = None

    async def _cycle(self) -> None:
        self.step = "delivering"
        await self.deliver()
        self.step = "polling"
        target, etag = await self._online(
            self.link.target_state(self.identity, wait=self.settings.poll_wait, etag=self.etag)
        )
        if target is None and not (self.retry and self.shared.clock() >= self.retry_at):
            return
        self.last_error, self.retry = None, False
        await self.update()  # unreachable: raised with the retry due at once (the caller's backoff paces it)
        if self.retry:  # no retry loops: later each time, no jitter (one device's own retries)
            b = DEFAULT_BOUNDS  # the agent's own
            delay = next_delay(self.retries, initial=b.update_retry_first, ceiling=b.update_retry_max, rand=lambda: 1.0)
            self.retry_at = self.shared.clock() + delay
            self.retries += 1
        else:
            self.retries = 0
        self.etag = etag
        if not (self.retry or self.last_error):  # as the agent keeps it: a re-run polls with it (`Agent._remember`)
            await self._save(etag=etag)
        self.step = "reporting"
        await self.report()

    # --- updating -------------------------------------------------------------------------

    async def update(self) -> None:
        """Verify in a worker process, then move each app whose release changed on the simulated engine.

        Raises:
            HubUnreachableError: the verification could not reach the hub (tried again after the backoff).
        """
        job = VerifyJob(
            data_dir=self.data_dir,
            arch=self.settings.arch,
            installed=dict(self.installed),
            failed=dict(self.failed),
            policy=self.shared.policy,
        )
        self.step = "verifying"
        verified = await self.shared.work.run("verify", verify_device, job)
        self.step = "switching"
        if verified.plan is not None:
            self.failed = dict(verified.plan.failed)
            for app in verified.plan.staying:
                staying = self.installed[app].version if app in self.installed else "nothing"
                self.last_error = f"{app}: the assigned release failed on this device; staying on {staying}"
        for candidate in verified.candidates:
            await self._switch(candidate)
        if verified.plan is not None and verified.failure is None:
            for app in verified.plan.removed:
                self.installed.pop(app, None)
                self.engine.remove(app)
            self.environment = dict(verified.environment or {})
        await self._save()
        if verified.failure is not None:
            self._failed_verification(verified.failure)

    def _failed_verification(self, failure: Failure) -> None:
        """The agent's handling of what stopped an update (`Agent.cycle`)."""
        self.retry = failure.retry
        if failure.kind == "unreachable":
            self.retry, self.retry_at = True, 0.0  # a 304 next time must not hide the change
            raise HubUnreachableError(failure.message)
        if failure.kind == "refused":
            self.shared.counters.refused += 1
            self.last_error = f"update refused ({failure.reason}): {failure.message}"[:500]
        elif failure.kind == "permission":
            self.last_error = failure.message
        else:
            self.last_error = f"update could not be carried out: {failure.message}"[:500]
        log.info("device %s: %s", self.identity.device_id, self.last_error)

    async def _switch(self, candidate: Candidate) -> None:
        """Move one app to a verified release on the simulated engine; its outcome becomes the agent's event."""
        s, app, release = self.settings, candidate.app, candidate.release
        current = self.installed.get(app)
        planned = self.engine.begin(app, release)
        how = course(
            s.seed,
            device=self.index,
            app=app,
            mark=candidate.mark,
            services=release.names,  # `--fail-rate` is every update's, whatever it recreates
            fail_rate=s.fail_rate,
            download=s.download_seconds,
            start=s.start_seconds,
        )
        if how.failing is not None:
            self.engine.failing(app, how.failing)  # its new container exits as soon as it starts
        await carry_out(self.engine, app, planned, how)
        before = current.version if current else None
        if how.failing is None:
            self.installed[app] = candidate.entry
            self.failed.pop(app, None)
            self.outbox.add(event(None, app, "committed", from_release=before, to_release=release.version))
            self.shared.counters.committed += 1
            return
        self.failed[app] = candidate.mark
        reason = f"{how.failing}: exited with code 1 (simulated failure, {SIMULATOR})"
        logs = f"{SIMULATOR}: simulated failure of {app}/{how.failing} {release.version}\n"
        self.outbox.add(
            event(
                None,
                app,
                "failed",
                service=how.failing,
                reason=reason,
                logs=logs,
                from_release=before,
                to_release=release.version,
            )
        )
        self.last_error = f"update of {app} to {release.version} failed and was rolled back: {reason}"[:500]
        self.shared.counters.failed += 1

    async def _save(self, *, etag: str | None = None) -> None:
        state = LocalState(
            apps=dict(self.installed), environment=dict(self.environment), failed=dict(self.failed), etag=etag
        )
        await asyncio.to_thread(save_state, self.data_dir, state)

    # --- reporting ------------------------------------------------------------------------

    def properties(self) -> dict[str, Any]:
        """The twin's reported state, as the agent states it (`Agent.report`), marked as simulated."""
        state = ReportedState(
            apps=app_reports(self.installed, self.engine.status()),
            agent_version=__version__,
            os=f"simulated ({SIMULATOR})",
            arch=self.settings.arch,
            disk_free=SIMULATED_DISK_FREE,
            mem_available=SIMULATED_MEMORY,
            last_error=None if self.last_error is None else printable(self.last_error, MAX_REASON_CHARS),
            simulator=SIMULATOR,
        )
        return state.patch()

    async def report(self) -> None:
        """Keep the current state report when it is due (`agent.report.report_due`, as the agent) and deliver it.

        Trouble leaves it kept for the next try. An older report still waiting is replaced even
        when this one is due to no one, as the agent does.
        """
        properties = self.properties()
        last, last_at = self.reported or (None, None)
        if report_due(properties, last, last_at=last_at, now=self.shared.clock()) or self.outbox.report() is not None:
            self.outbox.keep_report(properties)
        try:
            await self.deliver()
        except (HubUnreachableError, HubRefusedError, DeviceOfflineError) as exc:
            log.debug("device %s: report not delivered: %s", self.identity.device_id, exc)

    async def deliver(self) -> None:
        """Send buffered events, oldest first, then the kept state report (`Agent.deliver`).

        Raises:
            HubUnreachableError: the hub could not be reached; what is buffered stays.
            DeviceOfflineError: the device's offline period began; what is buffered stays.
        """
        async with self._delivering:
            if self.greet:
                recorded = await self._online(self.link.events(self.identity, [], dropped=0))
                self.outbox.start_after(recorded)
                self.greet = False
            while True:
                pending = self.outbox.pending()
                if not pending.events and not pending.dropped:
                    break
                events = [{**body, "seq": seq} for seq, body in pending.events]
                try:
                    through = await self._online(self.link.events(self.identity, events, dropped=pending.dropped))
                except HubRefusedError as exc:
                    if exc.status not in REFUSED_FOR_GOOD or not events:
                        return  # not the events' fault: kept for a later cycle
                    self.outbox.discard(events[-1]["seq"])
                    continue
                self.outbox.acknowledge(through, dropped=pending.dropped)
                if not events or through < events[-1]["seq"]:
                    break
            kept = self.outbox.report()
            if kept is None:
                return
            try:
                await self._online(self.link.report(self.identity, kept))
                self.reported = (kept, self.shared.clock())
            except HubRefusedError as exc:
                if exc.status not in REFUSED_FOR_GOOD:
                    return
            self.outbox.delivered_report(kept)

    # --- connectivity ---------------------------------------------------------------------

    def _connectivity(self) -> tuple[bool, float]:
        s = self.settings
        elapsed = self.shared.clock() - self.shared.started
        return connectivity(s.seed, device=self.index, elapsed=elapsed, share=s.offline, period=s.offline_period)

    async def _online(self, request: Coroutine[Any, Any, T]) -> T:
        """Await `request` while the device is online; its offline period beginning drops it.

        Raises:
            DeviceOfflineError: the device is offline, or went offline while waiting for the answer.
        """
        offline, lasting = self._connectivity()
        if offline:
            request.close()
            raise DeviceOfflineError(f"device {self.index} is offline")
        try:
            async with asyncio.timeout(None if math.isinf(lasting) else lasting):
                return await request
        except TimeoutError as exc:
            raise DeviceOfflineError(f"device {self.index} went offline") from exc
