"""The live view drawn without a terminal: a View and a time in, text out (through a recording Console)."""

from __future__ import annotations

from rich.console import Console

from edgefleet.demo.events import AgentState, Command, Note, RolloutProgress, StepDone, StepStarted, View, Wave, fold
from edgefleet.demo.view import BAR_WIDTH, duration, render_done, render_live, spinner_frame


def text(renderable):
    console = Console(record=True, width=100, color_system=None)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())  # padding fills the width


def rollout_view():
    view = View()
    for now, event in [
        (10.0, StepStarted("Rollout of hello@1.1.0 to the real agents")),
        (10.1, Command("edgefleet deploy create --release hello@1.1.0 --name hello-2")),
        (12.0, RolloutProgress("hello-2", "active", 2, (Wave(1, 1, 1), Wave(2, 3, 1, downloading=1)))),
        (12.0, AgentState("demo1", "hello@1.0.0", "committed nothing->1.0.0")),
        (12.0, AgentState("demo2", None)),
    ]:
        view = fold(view, event, now)
    return view


def test_the_running_step_has_a_spinner_its_elapsed_time_and_its_commands():
    shown = text(render_live(rollout_view(), 22.5))
    lines = shown.splitlines()
    assert lines[0] == f"{spinner_frame(12.5)} Rollout of hello@1.1.0 to the real agents  12 s"
    assert lines[1] == "    $ edgefleet deploy create --release hello@1.1.0 --name hello-2"
    assert "rollout hello-2  active  wave 2 of 2" in shown


def test_a_rollout_shows_a_bar_per_wave_with_updated_and_failed_counts_and_each_agent():
    shown = text(render_live(rollout_view(), 12.0))
    wave1 = next(line for line in shown.splitlines() if "wave 1 " in line and "updated" in line)
    assert "━" * BAR_WIDTH in wave1  # a full bar
    assert wave1.endswith("1/1 updated  0 failed")
    wave2 = next(line for line in shown.splitlines() if "wave 2 " in line and "updated" in line)
    assert "▸ wave 2" in wave2  # the current wave is marked
    assert wave2.count("━") == BAR_WIDTH // 3  # a third of the bar (without colours, the rest is blank)
    assert wave2.endswith("1/3 updated  0 failed  1 downloading")
    assert "real agents" in shown
    assert any(line.split() == ["demo1", "runs", "hello@1.0.0", "last", "update:", "committed", "nothing->1.0.0"]
               for line in shown.splitlines())  # fmt: skip
    assert any(line.split() == ["demo2", "runs", "nothing", "last", "update:", "-"] for line in shown.splitlines())


def test_a_paused_rollout_shows_its_failures_and_reason():
    view = fold(
        rollout_view(),
        RolloutProgress("hello-2", "paused", 1, (Wave(1, 1, 0, failed=1), Wave(2, 3, 0)), reason="1 of 1 failed"),
        20.0,
    )
    shown = text(render_live(view, 20.0))
    assert "rollout hello-2  paused  wave 1 of 2" in shown
    assert "0/1 updated  1 failed" in shown
    assert "1 of 1 failed" in shown


def test_a_finished_step_is_a_checklist_line_with_its_duration_commands_and_last_rollout_status():
    view = fold(fold(rollout_view(), Note("hello-2: paused: wave 1 failed", detail=True), 30.0), StepDone(), 41.0)
    assert view.current is None
    assert text(render_live(view, 50.0)).strip() == ""
    assert text(render_done(view.steps[-1])).splitlines() == [
        "✓ Rollout of hello@1.1.0 to the real agents  31 s",
        "    $ edgefleet deploy create --release hello@1.1.0 --name hello-2",
        "    hello-2: paused: wave 1 failed",
        "    hello-2: active, wave 2 of 2: wave 1: 1/1 updated | wave 2: 1/3 updated, 1 downloading",
    ]


def test_a_wave_without_devices_yet_has_no_counts():
    view = fold(rollout_view(), RolloutProgress("hello-2", "active", 1, (Wave(1, 1, 0), Wave(2, 0, 0))), 13.0)
    wave2 = next(line for line in text(render_live(view, 13.0)).splitlines() if "wave 2" in line)
    assert wave2.split() == ["wave", "2", "no", "devices", "yet"]


def test_long_commands_wrap_under_their_indent_where_the_terminal_would_cut_them():
    view = fold(fold(View(), StepStarted("Hub"), 0.0), Command("edgefleet " + "x" * 50 + " " + "y" * 20), 0.0)
    console = Console(record=True, width=40, color_system=None, soft_wrap=True)  # as the CLI's console
    console.print(render_done(fold(view, StepDone(), 1.0).steps[0]))
    console.print(render_live(view, 0.5))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert all(len(line) <= 40 for line in lines), lines
    assert lines[1:4] == ["    $ edgefleet", "    " + "x" * 36, "    " + "x" * 14 + " " + "y" * 20]
    assert lines[5:8] == lines[1:4]


def test_a_failed_step_has_a_cross():
    view = fold(fold(View(), StepStarted("Hub"), 0.0), StepDone(ok=False), 60.5)
    assert text(render_done(view.steps[0])).splitlines() == ["✗ Hub  1 min 00 s"]


def test_durations_and_spinner_frames():
    assert [duration(s) for s in (-1, 0.44, 9.96, 12.4, 59.4, 125)] == [
        "0.0 s", "0.4 s", "10.0 s", "12 s", "59 s", "2 min 05 s"
    ]  # fmt: skip
    assert spinner_frame(0) != spinner_frame(0.1)
    assert spinner_frame(0.0) == spinner_frame(0.01)
