"""Download progress for people: the callback type, target names, and the agent's periodic log lines."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Protocol


class DownloadProgress(Protocol):
    """Hears how each download of a target file goes: every chunk, then its end, whatever the end."""

    def update(self, url: str, received: int, total: int | None) -> None:
        """`received` bytes so far of `total` (None: the server did not say)."""

    def end(self, url: str, *, complete: bool) -> None:
        """The download finished (`complete`) or stopped (lost connection, refusal, bad length)."""


LOG_INTERVAL = 10.0
"""Seconds between two log lines about one download."""
LARGE = 1024 * 1024
"""Downloads at least this long (or of unknown length) are logged when they start, too."""
MAX_TRACKED = 16
"""Downloads followed at once; the oldest is forgotten first (a download that never ends is not kept forever)."""

_HASH_PREFIX = re.compile(r"^[0-9a-f]{64}\.")


def target_name(url: str) -> str:
    """The target file a URL names, without the consistent-snapshot hash prefix."""
    return _HASH_PREFIX.sub("", url.rsplit("/", 1)[-1])


def size(count: int) -> str:
    """Bytes for people: 512 B, 3.4 MiB."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


class LoggedProgress:
    """Log a large download when it starts, at most once per `interval` while it runs, and every download's end."""

    def __init__(
        self, logger: logging.Logger, *, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._received: dict[str, int] = {}

    def update(self, url: str, received: int, total: int | None) -> None:
        now = self._clock()
        name = target_name(url)
        last = self._last.get(url)
        if last is None:
            if len(self._last) >= MAX_TRACKED:
                oldest = next(iter(self._last))
                del self._last[oldest]
                self._received.pop(oldest, None)
            self._last[url] = now
            if total is None or total >= LARGE:  # a small file gets one line, at its end
                shown = f"{size(received)} of {size(total)}" if total is not None else size(received)
                self._log.info("downloading %s (%s)", name, shown)
        elif now - last >= self._interval and (total is None or received < total):  # the end has its own line
            self._last[url] = now
            if total:
                self._log.info(
                    "downloading %s: %s of %s (%d%%)", name, size(received), size(total), received * 100 // total
                )
            else:
                self._log.info("downloading %s: %s", name, size(received))
        self._received[url] = received

    def end(self, url: str, *, complete: bool) -> None:
        received = self._received.pop(url, 0)
        self._last.pop(url, None)
        if complete:
            self._log.info("downloaded %s (%s)", target_name(url), size(received))
        else:
            self._log.warning("download of %s stopped after %s", target_name(url), size(received))
