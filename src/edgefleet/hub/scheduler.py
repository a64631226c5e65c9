"""The rollout scheduler's thread: `rollouts.tick` passes while the hub serves, at a pace that bounds its cost.

A pass reads only the devices that changed since the last one (`hub.fleetview`), but it still
counts every device a deployment targets. The thread waits `rollout_interval_seconds` between
passes, or four times as long as the last pass took when that is longer (the scheduler uses
at most about a fifth of one core). When no deployment is active (only completed or paused
ones, which just take in newcomers), it runs a pass every `IDLE_SECONDS`. At that pace it
also forgets spent device tokens that have expired (`devices.forget_expired_tokens`).
"""

from __future__ import annotations

import logging
import threading
import time

from edgefleet.hub.context import Hub
from edgefleet.hub.errors import HubError
from edgefleet.hub.services import devices, rollouts

log = logging.getLogger(__name__)

IDLE_SECONDS = 30.0
"""Time between passes while no deployment is active."""
COST_FACTOR = 4.0
"""A pass that took T seconds is followed by a wait of at least COST_FACTOR * T."""


class Scheduler:
    """Runs scheduler passes on a daemon thread until `stop`; a failing pass is logged, and the next one runs."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgefleet-scheduler", daemon=True)
        self.passes = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        interval = self._hub.settings.rollout_interval_seconds
        last_pass = last_prune = float("-inf")
        while not self._stop.is_set():
            started = time.monotonic()
            took = 0.0
            try:
                if started - last_prune >= IDLE_SECONDS:
                    last_prune = started
                    devices.forget_expired_tokens(self._hub)
                if rollouts.active(self._hub) or started - last_pass >= IDLE_SECONDS:
                    rollouts.tick(self._hub)
                    last_pass = started
                    took = time.monotonic() - started
                    self.passes += 1
            except HubError as exc:
                log.warning("rollout pass failed: %s", exc.message)
            except Exception:  # a bug in one pass must not stop every rollout for good
                log.exception("rollout pass failed")
            self._stop.wait(max(interval, COST_FACTOR * took))
