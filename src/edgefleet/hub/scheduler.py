"""The rollout scheduler's thread: a `rollouts.tick` every `rollout_interval_seconds` while the hub serves."""

from __future__ import annotations

import logging
import threading

from edgefleet.hub.context import Hub
from edgefleet.hub.errors import HubError
from edgefleet.hub.services import rollouts

log = logging.getLogger(__name__)


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
        while not self._stop.is_set():
            try:
                rollouts.tick(self._hub)
            except HubError as exc:
                log.warning("rollout pass failed: %s", exc.message)
            except Exception:  # a bug in one pass must not stop every rollout for good
                log.exception("rollout pass failed")
            self.passes += 1
            self._stop.wait(interval)
