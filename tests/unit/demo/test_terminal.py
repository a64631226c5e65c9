"""The reporters: plain lines as the demo always printed them; a live view printing finished steps above it."""

from __future__ import annotations

import io

from rich.console import Console

from edgefleet.demo.events import AgentState, Command, Note, RolloutProgress, StepDone, StepStarted, Wave
from edgefleet.demo.terminal import LiveReporter, PlainReporter

SCRIPT = [
    StepStarted("Hub"),
    Command("edgefleet hub init --data-dir DIR/hub"),
    StepDone(),
    StepStarted("Rollout"),
    Command("edgefleet deploy create --release hello@1.0.0"),
    RolloutProgress("hello-1", "active", 1, (Wave(1, 1, 0), Wave(2, 2, 0))),
    AgentState("demo1", None),
    RolloutProgress("hello-1", "active", 1, (Wave(1, 1, 0), Wave(2, 2, 0))),
    RolloutProgress("hello-1", "completed", 2, (Wave(1, 1, 1), Wave(2, 2, 2))),
    StepDone(),
    Note("demo1: runs hello@1.0.0; last update: committed nothing->1.0.0", detail=True),
]


def test_plain_lines_are_what_the_demo_always_printed():
    file = io.StringIO()
    with PlainReporter(Console(file=file, width=200)) as report:
        for event in SCRIPT:
            report(event)
    assert file.getvalue().splitlines() == [
        "$ edgefleet hub init --data-dir DIR/hub",
        "$ edgefleet deploy create --release hello@1.0.0",
        "  hello-1: active, wave 1 of 2: wave 1: 0/1 updated | wave 2: 0/2 updated",
        "  hello-1: completed, wave 2 of 2: wave 1: 1/1 updated | wave 2: 2/2 updated",
        "  demo1: runs hello@1.0.0; last update: committed nothing->1.0.0",
    ]


def test_the_live_reporter_prints_each_finished_step_and_plain_lines_once_stopped():
    file = io.StringIO()
    clock = iter(range(100))
    console = Console(file=file, width=100, force_terminal=True, color_system=None)
    with LiveReporter(console, clock=lambda: float(next(clock))) as report:
        for event in SCRIPT[:-1]:
            report(event)
        report.stop()
        report(SCRIPT[-1])
        report(Command("edgefleet after"))
    shown = file.getvalue()
    assert "✓ Hub  " in shown
    assert "    $ edgefleet hub init --data-dir DIR/hub" in shown
    assert "✓ Rollout  " in shown
    assert "hello-1: completed, wave 2 of 2" in shown
    assert "▸ wave 1" in shown  # a live frame of the rollout was drawn
    assert shown.rstrip().endswith(
        "  demo1: runs hello@1.0.0; last update: committed nothing->1.0.0\n$ edgefleet after"
    )
