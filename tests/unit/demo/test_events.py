"""The demo's events fold into the view's state, and a plain-lines reporter prints what the demo always printed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.demo.events import (
    MAX_STEP_LINES,
    AgentState,
    Command,
    Note,
    RolloutProgress,
    StepDone,
    StepStarted,
    View,
    Wave,
    fold,
    plain_line,
    progress_line,
)


def run(*stamped):
    view = View()
    for now, event in stamped:
        view = fold(view, event, now)
    return view


def rollout(state="active", wave=1, *waves, reason=None):
    return RolloutProgress("hello-1", state, wave, tuple(waves), reason)


def test_a_step_runs_from_its_start_to_its_end_and_keeps_its_lines():
    view = run((1.0, StepStarted("Hub")), (1.5, Command("edgefleet hub init")), (2.0, Note("ready")))
    assert view.current is not None
    assert (view.current.title, view.current.started, view.current.ended) == ("Hub", 1.0, None)
    assert view.current.lines == (Command("edgefleet hub init"), Note("ready"))
    done = fold(view, StepDone(), 3.5)
    assert done.current is None
    assert (done.steps[-1].ended, done.steps[-1].ok) == (3.5, True)
    failed = fold(view, StepDone(ok=False), 4.0)
    assert failed.steps[-1].ok is False


def test_a_rollout_and_agents_belong_to_the_running_step():
    first = rollout("active", 1, Wave(1, 1, 0, downloading=1), Wave(2, 2, 0))
    view = run(
        (0, StepStarted("Rollout")),
        (1, first),
        (1, AgentState("demo2", "hello@1.0.0", "committed nothing->1.0.0")),
        (1, AgentState("demo1", None)),
        (2, AgentState("demo1", "hello@1.0.0")),
    )
    assert view.current is not None
    assert view.current.rollout == first
    assert [(a.name, a.running) for a in view.current.agents] == [("demo1", "hello@1.0.0"), ("demo2", "hello@1.0.0")]
    nxt = run((0, StepStarted("Rollout")), (1, first), (2, StepDone()), (3, StepStarted("End state")))
    assert nxt.current is not None
    assert (nxt.current.rollout, nxt.steps[0].rollout) == (None, first)  # the finished step keeps its last status


def test_steps_do_not_nest_a_new_one_ends_the_running_one():
    view = run((0, StepStarted("a")), (2, StepStarted("b")))
    assert [(s.title, s.ended) for s in view.steps] == [("a", 2), ("b", None)]


def test_events_outside_a_step_leave_the_view_alone():
    assert run((0, Note("could not remove")), (1, StepDone()), (2, rollout())) == View()


def test_progress_line_is_the_demos_old_format():
    assert progress_line(rollout("active", 1, Wave(1, 0, 0), Wave(2, 0, 0))) == "active, wave 1 of 2: starting"
    line = progress_line(rollout("paused", 1, Wave(1, 1, 0, failed=1), Wave(2, 2, 0)))
    assert line == "paused, wave 1 of 2: wave 1: 0/1 updated, 1 failed | wave 2: 0/2 updated"
    busy = progress_line(rollout("active", 2, Wave(1, 1, 1), Wave(2, 4, 1, downloading=2, offline=1, restored=1)))
    assert busy == (
        "active, wave 2 of 2: wave 1: 1/1 updated | wave 2: 1/4 updated, 2 downloading, 1 offline, 1 restored"
    )


def test_plain_lines_print_commands_notes_and_changed_progress_only():
    view = run((0, StepStarted("Rollout")))
    assert plain_line(view, StepStarted("x")) is None
    assert plain_line(view, StepDone()) is None
    assert plain_line(view, AgentState("demo1", "hello@1.0.0")) is None
    assert plain_line(view, Command("edgefleet deploy create")) == "$ edgefleet deploy create"
    assert plain_line(view, Note("3 devices enrolled")) == "3 devices enrolled"
    assert plain_line(view, Note("demo1: runs hello@1.0.0", detail=True)) == "  demo1: runs hello@1.0.0"
    first = rollout("active", 1, Wave(1, 1, 0), Wave(2, 2, 0))
    assert plain_line(view, first) == "  hello-1: active, wave 1 of 2: wave 1: 0/1 updated | wave 2: 0/2 updated"
    seen = fold(view, first, 1)
    assert plain_line(seen, rollout("active", 1, Wave(1, 1, 0), Wave(2, 2, 0))) is None
    assert plain_line(seen, rollout("active", 1, Wave(1, 1, 1), Wave(2, 2, 0))) is not None
    assert plain_line(seen, rollout("active", 1, Wave(1, 1, 0), Wave(2, 2, 0), reason="why")) is None


EVENTS = st.one_of(
    st.builds(StepStarted, st.sampled_from(["a", "b"])),
    st.builds(StepDone, st.booleans()),
    st.builds(Command, st.text(max_size=5)),
    st.builds(Note, st.text(max_size=5)),
    st.builds(AgentState, st.sampled_from(["demo1", "demo2", "demo3"]), st.none() | st.just("hello@1.0.0")),
    st.builds(rollout, st.sampled_from(["active", "paused"])),
)


@settings(max_examples=200)
@given(st.lists(EVENTS, max_size=80))
def test_any_events_leave_at_most_the_last_step_running_with_bounded_lines_and_one_row_per_agent(events):
    view = View()
    for now, event in enumerate(events):
        view = fold(view, event, float(now))
    assert all(step.ended is not None for step in view.steps[:-1])
    assert sum(isinstance(e, StepStarted) for e in events) == len(view.steps)
    for step in view.steps:
        assert len(step.lines) <= MAX_STEP_LINES
        names = [a.name for a in step.agents]
        assert names == sorted(set(names))
        assert step.ended is None or step.ended >= step.started
