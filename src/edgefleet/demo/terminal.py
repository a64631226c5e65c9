"""The demo's reporters: plain lines (pipes, CI, `--ci`) or a Rich live view on an interactive terminal.

Each is called with the scenario's events (`events.py`) and is a context manager: the
live view runs from `__enter__` until `stop()` or `__exit__`, after which it prints plain
lines like the other reporter (the end summary and the clean-up are printed normally).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console, RenderableType
from rich.live import Live

from edgefleet.demo.events import Command, Event, Note, View, fold, plain_line
from edgefleet.demo.view import render_done, render_live

REFRESH_PER_SECOND = 8
"""Redraws of the live view per second (the spinner and elapsed time); its data changes about once a second."""


class PlainReporter:
    """Prints what `edgefleet demo` has always printed: commands, notes, a rollout's progress when it changes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._plain_view = View()

    def __call__(self, event: Event) -> None:
        line = plain_line(self._plain_view, event)
        self._plain_view = fold(self._plain_view, event, 0.0)  # plain lines carry no times
        if line is not None:
            self.console.print(line, markup=False, highlight=False)

    def stop(self) -> None:
        """Nothing to stop: plain lines are printed as they come."""

    def __enter__(self) -> PlainReporter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


class LiveReporter(PlainReporter):
    """A checklist of finished steps above a live region: the running step's spinner, rollout bars and agents."""

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(console)
        self._clock = clock
        self._view = View()
        # Transient: when it stops, the region (then empty, or a step cut short) gives way to plain lines.
        self._live = Live(
            console=console, get_renderable=self._render, refresh_per_second=REFRESH_PER_SECOND, transient=True
        )

    def __call__(self, event: Event) -> None:
        if not self._live.is_started:
            super().__call__(event)
            return
        before = self._view
        self._view = fold(before, event, self._clock())  # one reference swap: the refresh thread reads it whole
        if before.current is not None and self._view.steps[len(before.steps) - 1].ended is not None:
            self._live.console.print(render_done(self._view.steps[len(before.steps) - 1]))
        elif isinstance(event, Command | Note) and before.current is None:
            super().__call__(event)  # outside any step: nothing in the view would show it
        self._live.refresh()

    def stop(self) -> None:
        """End the live view (idempotent); what is reported afterwards is printed as plain lines."""
        self._live.stop()

    def __enter__(self) -> LiveReporter:
        self._live.start()
        return self

    def _render(self) -> RenderableType:
        return render_live(self._view, self._clock())
