"""Download progress for people: the callback type, target names, and the agent's periodic log lines."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

DownloadProgress = Callable[[str, int, int | None], None]
"""Called as (url, bytes received so far, whole length or None) for each chunk of a target file."""

LOG_INTERVAL = 10.0
"""Seconds between two log lines about one download."""
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
    """Log a download when it starts, at most once per `interval` while it runs, and when it completes."""

    def __init__(
        self, logger: logging.Logger, *, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}

    def __call__(self, url: str, received: int, total: int | None) -> None:
        now = self._clock()
        name = target_name(url)
        if total is not None and received >= total:
            self._last.pop(url, None)
            self._log.info("downloaded %s (%s)", name, size(received))
            return
        last = self._last.get(url)
        if last is None:
            if len(self._last) >= MAX_TRACKED:
                del self._last[next(iter(self._last))]
            self._last[url] = now
            shown = f"{size(received)} of {size(total)}" if total is not None else size(received)
            self._log.info("downloading %s (%s)", name, shown)
        elif now - last >= self._interval:
            self._last[url] = now
            if total:
                self._log.info(
                    "downloading %s: %s of %s (%d%%)", name, size(received), size(total), received * 100 // total
                )
            else:
                self._log.info("downloading %s: %s", name, size(received))
