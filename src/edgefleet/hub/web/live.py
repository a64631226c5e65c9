"""Live updates over server-sent events: a bounded number of streams per process, each of bounded lifetime.

A stream sends an event whenever what it renders changes (looked at every
`web_stream_interval_seconds`), a comment now and then so proxies keep it open, and ends
after `web_stream_max_seconds`; the browser's EventSource then reconnects by itself. When
every slot is taken, the answer is an empty stream that asks the browser to retry later.
The session is checked again before every look, so a logout or a revoked token ends it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable

import anyio

from edgefleet.hub import offload
from edgefleet.hub.errors import HubError

KEEPALIVE_SECONDS = 15.0
BUSY_RETRY_MS = 10_000
RECONNECT_MS = 1_000


class StreamSlots:
    """At most `limit` open streams in this process; `take` answers False when all are in use."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._open = 0

    @property
    def open(self) -> int:
        return self._open

    def take(self) -> bool:
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)


def event(name: str, data: str) -> str:
    """One server-sent event; every line of `data` becomes a ``data:`` line (pure)."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def busy() -> str:
    """The whole answer when no slot is free: come back in a while."""
    return f"retry: {BUSY_RETRY_MS}\n: too many live streams; retrying later\n\n"


async def stream(
    slots: StreamSlots,
    render: Callable[[], str],
    *,
    name: str,
    interval: float,
    lifetime: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[str]:
    """Events named `name` carrying `render()` whenever it changes, until `lifetime` seconds have passed.

    `render` runs in a worker thread (it reads the database); when it raises a `HubError`
    (the session ended, the deployment is gone) the stream ends.
    """
    if not slots.take():
        yield busy()
        return
    try:
        yield f"retry: {RECONNECT_MS}\n\n"
        started = last_sent = clock()
        previous: str | None = None
        while clock() - started < lifetime:
            try:
                current = await offload.call(render)
            except HubError:
                return
            if current != previous:
                previous = current
                last_sent = clock()
                yield event(name, current)
            elif clock() - last_sent >= KEEPALIVE_SECONDS:
                last_sent = clock()
                yield ": keep-alive\n\n"
            await anyio.sleep(min(interval, max(0.0, lifetime - (clock() - started))))
    finally:
        slots.give_back()
