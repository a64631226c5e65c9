"""What people watch: transfer bars on a terminal (none elsewhere) and per-wave bars in `deploy status`."""

from __future__ import annotations

import io

from rich.console import Console

from edgefleet.cli.common import TerminalDownloads, transfer_progress
from edgefleet.cli.deploy import _status_table

HASH = "cd" * 32


def terminal() -> tuple[Console, io.StringIO]:
    sink = io.StringIO()
    return Console(file=sink, force_terminal=True, width=120, color_system=None), sink


def test_agent_downloads_show_a_bar_per_file_that_stays_when_done():
    console, sink = terminal()
    downloads = TerminalDownloads(console)
    url = f"https://hub/tuf/repository/targets/{HASH}.sensor-1.0.0.tar"
    for got in range(0, 2 * 1024 * 1024 + 1, 256 * 1024):
        downloads.update(url, got, 2 * 1024 * 1024)
    downloads.end(url, complete=True)
    shown = sink.getvalue()
    assert "downloading sensor-1.0.0.tar" in shown
    assert "2.0/2.0 MiB" in shown
    assert downloads._progress is None  # the bars stopped with the last download


def test_a_download_that_stops_says_so_and_its_bar_ends_too():
    console, sink = terminal()
    downloads = TerminalDownloads(console)
    downloads.update("https://hub/targets/a.tar", 0, 100)
    downloads.update("https://hub/targets/x.tar", 1024, None)
    downloads.end("https://hub/targets/x.tar", complete=False)
    assert downloads._progress is not None  # a.tar still runs
    downloads.end("https://hub/targets/a.tar", complete=True)
    assert downloads._progress is None
    assert "stopped x.tar" in sink.getvalue()


def test_an_agent_stopping_mid_download_stops_the_bars():
    console, sink = terminal()
    downloads = TerminalDownloads(console)
    downloads.update("https://hub/targets/x.tar", 1024, None)
    downloads.close()
    assert "downloading x.tar" in sink.getvalue()
    assert downloads._progress is None


def test_no_bars_when_the_output_is_not_a_terminal():
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=False)
    with transfer_progress(console) as progress:
        task = progress.add_task("uploading a@1", total=10)
        progress.advance(task, 10)
    downloads = TerminalDownloads(console)
    downloads.update("https://hub/targets/x.tar", 10, 10)
    downloads.end("https://hub/targets/x.tar", complete=True)
    assert sink.getvalue() == ""


def test_deploy_status_draws_each_waves_updated_share_as_a_bar():
    wave = {"pending": 0, "downloading": 0, "failed": 0, "offline": 0, "restored": 0}
    status = {
        "deployment": {"name": "r1", "app": "a", "version": "1.0.0", "state": "rolling", "wave": 2, "reason": ""},
        "targeted": 10,
        "waves": [
            {**wave, "wave": 1, "reach": "1", "size": 1, "updated": 1},
            {**wave, "wave": 2, "reach": "100%", "size": 9, "updated": 3, "pending": 6},
            {**wave, "wave": 3, "reach": "100%", "size": 0, "updated": 0},
        ],
    }
    console, sink = terminal()
    console.print(_status_table(status))
    rows = [line for line in sink.getvalue().splitlines() if line.startswith("│")]
    assert rows[0].rstrip("│ ").endswith("━━━━━━━━━━━━━━━━━━━━ 100 %")
    assert rows[1].rstrip("│ ").endswith("33 %")
    assert "━━━━━━" in rows[1]
    assert "━" not in rows[2]
    assert rows[2].rstrip("│ ").endswith("0 %")
