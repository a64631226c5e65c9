"""What the demo reports as it runs: events as data, and the view's state they fold into (pure: no I/O, no clock).

The scenario (`scenario.py`) calls its reporter with these events and knows nothing of
terminals. `fold` turns a `View` and an event, stamped with the reporter's clock, into the
next `View`; `plain_line` says what a plain-lines reporter prints for an event (what the
demo has always printed). `view.py` draws a `View` with Rich, `terminal.py` holds the two
reporters and is the only part that reads the clock or writes to the terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import assert_never

MAX_STEP_LINES = 32
"""Commands and notes a step keeps (the newest); the demo's steps have fewer than ten."""
MAX_AGENTS = 64
"""Agents a rollout's view follows; the demo starts three."""


@dataclass(frozen=True, slots=True)
class StepStarted:
    """A step of the scenario begins (it ends with `StepDone`)."""

    title: str


@dataclass(frozen=True, slots=True)
class StepDone:
    """The running step ended: `ok` is False when it raised (a failure, or Ctrl-C)."""

    ok: bool = True


@dataclass(frozen=True, slots=True)
class Command:
    """An `edgefleet` command the demo runs, as a user would type it (tokens elided), without the prompt."""

    line: str


@dataclass(frozen=True, slots=True)
class Note:
    """A line of news; `detail` lines are indented under what came before them in plain output."""

    text: str
    detail: bool = False


@dataclass(frozen=True, slots=True)
class Wave:
    """One wave of a rollout, as `deploy status` counts its devices."""

    wave: int
    size: int
    updated: int
    failed: int = 0
    downloading: int = 0
    offline: int = 0
    restored: int = 0


@dataclass(frozen=True, slots=True)
class RolloutProgress:
    """A deployment's state and per-wave counts, as polled from the hub."""

    name: str
    state: str
    wave: int
    """The current wave, counted from 1."""
    waves: tuple[Wave, ...]
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AgentState:
    """What a real agent runs now (`None`: nothing reported) and its latest update outcome ('STATUS FROM->TO')."""

    name: str
    running: str | None
    outcome: str | None = None


Event = StepStarted | StepDone | Command | Note | RolloutProgress | AgentState
Reporter = Callable[[Event], None]


@dataclass(frozen=True, slots=True)
class Step:
    """A step as the view shows it; `ended` is None while it runs."""

    title: str
    started: float
    ended: float | None = None
    ok: bool = True
    lines: tuple[Command | Note, ...] = ()
    rollout: RolloutProgress | None = None
    agents: tuple[AgentState, ...] = ()
    """Sorted by name."""


@dataclass(frozen=True, slots=True)
class View:
    """Everything the live view shows: the steps so far, the last one possibly running."""

    steps: tuple[Step, ...] = ()

    @property
    def current(self) -> Step | None:
        """The running step, if any."""
        if self.steps and self.steps[-1].ended is None:
            return self.steps[-1]
        return None


def fold(view: View, event: Event, now: float) -> View:
    """The view after `event`, which the reporter received at `now` (its monotonic clock, in seconds).

    Lines, rollout progress and agent states belong to the running step; with no step
    running they change nothing here (a reporter prints them as plain lines instead).
    """
    current = view.current
    if isinstance(event, StepStarted):
        # Steps do not nest: a new one ends the running one (the scenario's never overlap).
        ended = view.steps if current is None else (*view.steps[:-1], replace(current, ended=now))
        return View(steps=(*ended, Step(title=event.title, started=now)))
    if current is None:
        return view
    match event:
        case StepDone(ok=ok):
            step = replace(current, ended=now, ok=ok)
        case Command() | Note():
            step = replace(current, lines=(*current.lines, event)[-MAX_STEP_LINES:])
        case RolloutProgress():
            step = replace(current, rollout=event)
        case AgentState(name=name):
            others = [agent for agent in current.agents if agent.name != name]
            step = replace(current, agents=tuple(sorted([*others, event], key=lambda a: a.name))[:MAX_AGENTS])
        case _:
            assert_never(event)
    return View(steps=(*view.steps[:-1], step))


def progress_line(progress: RolloutProgress) -> str:
    """`STATE, wave N of M: wave 1: U/S updated, F failed | ...` (waves without devices left out)."""
    waves = " | ".join(
        f"wave {w.wave}: {w.updated}/{w.size} updated"
        + "".join(f", {count} {what}" for what, count in _counts(w) if count)
        for w in progress.waves
        if w.size
    )
    return f"{progress.state}, wave {progress.wave} of {len(progress.waves)}: {waves or 'starting'}"


def plain_line(before: View, event: Event) -> str | None:
    """The line a plain-lines reporter prints for `event` (None: nothing), given the view before it.

    Steps print nothing (a terminal shows them as a checklist); a rollout's progress is
    printed when its line changes.
    """
    match event:
        case Command(line=line):
            return f"$ {line}"
        case Note(text=text, detail=detail):
            return f"  {text}" if detail else text
        case RolloutProgress(name=name):
            current = before.current
            shown = current.rollout if current is not None else None
            line = progress_line(event)
            if shown is not None and shown.name == name and progress_line(shown) == line:
                return None
            return f"  {name}: {line}"
    return None


def _counts(wave: Wave) -> tuple[tuple[str, int], ...]:
    return (
        ("downloading", wave.downloading),
        ("failed", wave.failed),
        ("offline", wave.offline),
        ("restored", wave.restored),
    )
