"""The demo's child processes: each started with its output in a log file, waited for, and all stopped at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgefleet.demo.errors import DemoError

STOP_GRACE = 30.0
"""Seconds a child gets to stop after SIGTERM before it is killed (an agent finishes its transaction)."""


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, limit: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


class Children:
    """Every process the demo started, stopped in reverse order by `stop_all` (also after a failure)."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._started: list[Child] = []

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> Child:
        log = self._logs / f"{name}.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(  # noqa: S603 (commands the demo composed: podman, docker-registry, edgefleet)
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # Ctrl-C in the terminal reaches the demo, which stops them in order
            )
        child = Child(name, process, log)
        self._started.append(child)
        return child

    def wait_until(self, child: Child, ready: Callable[[], bool], *, what: str, timeout: float) -> None:
        """Until `ready()`; a child that exits or a wait that runs out is a DemoError naming its log."""
        deadline = time.monotonic() + timeout
        while not ready():
            if child.process.poll() is not None:
                raise DemoError(f"{child.name} exited ({child.process.returncode}) before {what}: {child.tail()}")
            if time.monotonic() > deadline:
                raise DemoError(f"{what}: not within {timeout:.0f} s (log: {child.log})")
            time.sleep(0.2)

    def stop_all(self) -> None:
        for child in reversed(self._started):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in reversed(self._started):
            try:
                child.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self._started.clear()
