"""The demo's live view drawn with Rich: a `View` and a time in, a renderable out (pure; `terminal.py` shows it).

A finished step is drawn once, as a checklist line with its commands under it
(`render_done`); the running step is drawn on every refresh with a spinner, its elapsed
time, its last lines and, during a rollout, a bar per wave and each real agent's state
(`render_live`).
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from edgefleet.demo.events import AgentState, Command, Note, RolloutProgress, Step, View, Wave, progress_line

LIVE_LINES = 6
"""Lines of the running step shown under it (the newest); the finished step shows them all."""
BAR_WIDTH = 30
_DOTS = Spinner("dots")
_STATE_STYLES = {"active": "cyan", "completed": "green", "paused": "yellow", "aborted": "red", "rolled-back": "red"}


def render_live(view: View, now: float) -> RenderableType:
    """The running step (nothing when none runs), as it looks at `now` (same clock as the events' stamps)."""
    step = view.current
    if step is None:
        return Text("")
    elapsed = now - step.started
    header = Text.assemble(
        (spinner_frame(elapsed), "cyan"), " ", (step.title, "bold"), "  ", (duration(elapsed), "dim")
    )
    parts: list[RenderableType] = [header, *(_line(line) for line in step.lines[-LIVE_LINES:])]
    if step.rollout is not None:
        parts.append(Padding(_rollout(step.rollout), (0, 0, 0, 4)))
    if step.agents:
        parts.append(Padding(_agents(step.agents), (0, 0, 0, 4)))
    return Group(*parts)


def render_done(step: Step) -> RenderableType:
    """A finished step: a check mark (a cross when it failed), its title and duration, its commands and notes."""
    mark = Text("✓", style="green") if step.ok else Text("✗", style="bold red")
    took = duration((step.ended if step.ended is not None else step.started) - step.started)
    parts: list[RenderableType] = [
        Text.assemble(mark, " ", step.title, "  ", (took, "dim")),
        *(_line(line) for line in step.lines),
    ]
    if step.rollout is not None:
        parts.append(_indented(Text(f"{step.rollout.name}: {progress_line(step.rollout)}", style="dim")))
    return Group(*parts)


def spinner_frame(elapsed: float) -> str:
    """The spinner's frame `elapsed` seconds into a step."""
    frames = _DOTS.frames
    return frames[int(max(elapsed, 0.0) * 1000 / _DOTS.interval) % len(frames)]


def duration(seconds: float) -> str:
    """`0.4 s`, `12 s`, `2 min 05 s`."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _line(line: Command | Note) -> RenderableType:
    if isinstance(line, Command):
        return _indented(Text.assemble(("$ ", "dim"), line.line))
    return _indented(Text(line.text, style="italic"))


def _indented(text: Text) -> RenderableType:
    # Long commands wrap under their indent, even on a console that leaves wrapping to the terminal (soft_wrap).
    text.no_wrap, text.overflow = False, "fold"
    return Padding(text, (0, 0, 0, 4))


def _rollout(progress: RolloutProgress) -> RenderableType:
    state = Text(progress.state, style=_STATE_STYLES.get(progress.state, ""))
    header = Text.assemble(
        ("rollout ", "dim"), (progress.name, "bold"), "  ", state, ("  wave ", "dim"), f"{progress.wave}",
        (" of ", "dim"), f"{len(progress.waves)}",
    )  # fmt: skip
    table = Table.grid(padding=(0, 1))
    for wave in progress.waves:
        table.add_row(*_wave_row(wave, current=wave.wave == progress.wave))
    parts: list[RenderableType] = [header, Padding(table, (0, 0, 0, 2))]
    if progress.reason:
        parts.append(Text(progress.reason, style="yellow"))
    return Group(*parts)


def _wave_row(wave: Wave, *, current: bool) -> tuple[RenderableType, ...]:
    label = Text(f"{'▸' if current else ' '} wave {wave.wave}", style="bold" if current else "")
    if not wave.size:  # its devices are counted once it starts
        return label, ProgressBar(total=1, completed=0, width=BAR_WIDTH), Text("no devices yet", style="dim")
    bar = ProgressBar(
        total=wave.size,
        completed=wave.updated,
        width=BAR_WIDTH,
        complete_style="red" if wave.failed else "cyan",
        finished_style="green",
    )
    counts = Text.assemble(
        f"{wave.updated}/{wave.size} updated", ("  ", ""), (f"{wave.failed} failed", "red" if wave.failed else "dim")
    )
    for what, count in (("downloading", wave.downloading), ("offline", wave.offline), ("restored", wave.restored)):
        if count:
            counts.append(f"  {count} {what}", style="dim")
    return label, bar, counts


def _agents(agents: tuple[AgentState, ...]) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    for agent in agents:
        table.add_row(
            Text(agent.name, style="bold"),
            Text(f"runs {agent.running}" if agent.running else "runs nothing", style="" if agent.running else "dim"),
            Text(f"last update: {agent.outcome or '-'}", style="red" if _failed(agent.outcome) else "dim"),
        )
    return Group(Text("real agents", style="dim"), Padding(table, (0, 0, 0, 2)))


def _failed(outcome: str | None) -> bool:
    return outcome is not None and not outcome.startswith("committed")
