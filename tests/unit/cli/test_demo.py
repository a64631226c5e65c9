"""`edgefleet demo` draws its live view only on an interactive terminal, and never with --ci."""

from __future__ import annotations

import io

from rich.console import Console

from edgefleet.cli.demo import reporter_for
from edgefleet.demo.terminal import LiveReporter, PlainReporter


def test_the_live_view_only_on_an_interactive_terminal_without_ci():
    terminal = Console(file=io.StringIO(), force_terminal=True, force_interactive=True)
    assert type(reporter_for(terminal, ci=False)) is LiveReporter
    assert type(reporter_for(terminal, ci=True)) is PlainReporter
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert type(reporter_for(pipe, ci=False)) is PlainReporter
    dumb = Console(file=io.StringIO(), force_terminal=True, force_interactive=False)  # TERM=dumb, TTY_INTERACTIVE=0
    assert type(reporter_for(dumb, ci=False)) is PlainReporter
