"""The agent's download progress for people: target names, sizes, and log lines bounded in number."""

from __future__ import annotations

import logging

import pytest

from edgefleet.agent.progress import MAX_TRACKED, LoggedProgress, size, target_name

HASH = "ab" * 32


def test_target_names_drop_the_consistent_snapshot_hash():
    assert target_name(f"https://hub/tuf/repository/targets/sensor/{HASH}.sensor-1.0.0.tar") == "sensor-1.0.0.tar"
    assert target_name("https://hub/targets/compose.yaml") == "compose.yaml"
    assert target_name("https://hub/targets/abc.compose.yaml") == "abc.compose.yaml"  # not a hash


@pytest.mark.parametrize(
    ("count", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (5 * 1024 * 1024, "5.0 MiB"), (3 * 1024**4, "3072.0 GiB")],
)
def test_sizes(count, shown):
    assert size(count) == shown


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_a_download_is_logged_at_start_every_interval_and_at_the_end(caplog):
    now = [0.0]
    progress = LoggedProgress(logging.getLogger("test.download"), interval=10, clock=lambda: now[0])
    url = f"https://hub/targets/{HASH}.app.tar"
    total = 4 * 1024 * 1024
    with caplog.at_level(logging.INFO, logger="test.download"):
        for step in range(0, 41):
            now[0] = step * 0.5  # 20 s of chunks, one every half second
            progress.update(url, step * total // 40, total)
        progress.end(url, complete=True)
    assert lines(caplog) == [
        "downloading app.tar (0 B of 4.0 MiB)",
        "downloading app.tar: 2.0 MiB of 4.0 MiB (50%)",
        "downloaded app.tar (4.0 MiB)",
    ]


def test_a_small_file_is_one_line_an_unknown_length_shows_bytes_and_a_stop_is_a_warning(caplog):
    now = [0.0]
    progress = LoggedProgress(logging.getLogger("test.download"), interval=1, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.download"):
        progress.update("https://hub/targets/compose.yaml", 0, 300)
        progress.update("https://hub/targets/compose.yaml", 300, 300)
        progress.end("https://hub/targets/compose.yaml", complete=True)
        progress.update("https://hub/targets/big", 0, None)
        now[0] = 2
        progress.update("https://hub/targets/big", 2048, None)
        progress.end("https://hub/targets/big", complete=False)
    assert lines(caplog) == [
        "downloaded compose.yaml (300 B)",
        "downloading big (0 B)",
        "downloading big: 2.0 KiB",
        "download of big stopped after 2.0 KiB",
    ]
    assert caplog.records[-1].levelno == logging.WARNING


def test_downloads_that_never_end_are_forgotten_oldest_first():
    progress = LoggedProgress(logging.getLogger("test.download"), clock=lambda: 0.0)
    for n in range(MAX_TRACKED * 3):
        progress.update(f"https://hub/targets/file-{n}", 0, None)
    assert len(progress._last) == len(progress._received) == MAX_TRACKED
    assert "https://hub/targets/file-0" not in progress._last
