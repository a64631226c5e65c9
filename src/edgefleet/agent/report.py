"""Whether the device's state report is worth sending: what changed since the last one the hub took (pure).

An agent at rest repeats the same report every cycle: the same releases, services, engine
and agent. Sent anyway it costs the device's link a report and the hub's full twin back,
and the device's storage two writes. It is sent when something in it changed; the free disk
and memory figures, which move all the time, count as changed when they moved by more than
their share (`VOLATILE`); and at least every `REFRESH_SECONDS`, so that the twin's figures
are never older than that. The first report after the agent starts is always sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REFRESH_SECONDS = 600.0
"""A report is sent at least this often, changed or not."""
VOLATILE = {"disk_free": 0.05, "mem_available": 0.10}
"""Figures that change all the time -> the share of their last reported value they must move by to count."""


def report_due(
    properties: Mapping[str, Any],
    last: Mapping[str, Any] | None,
    *,
    last_at: float | None,
    now: float,
    refresh: float = REFRESH_SECONDS,
) -> bool:
    """Whether `properties` should go to the hub, given the `last` report it took (at `last_at`, clock of `now`)."""
    if last is None or last_at is None or now - last_at >= refresh:
        return True
    if {key: value for key, value in properties.items() if key not in VOLATILE} != {
        key: value for key, value in last.items() if key not in VOLATILE
    }:
        return True
    return any(_moved(properties.get(key), last.get(key), share) for key, share in VOLATILE.items())


def _moved(new: object, old: object, share: float) -> bool:
    """A figure moved by more than `share` of its old value (appearing or going counts as moved)."""
    if not isinstance(new, int | float) or not isinstance(old, int | float):
        return new != old
    return abs(new - old) > share * abs(old)
