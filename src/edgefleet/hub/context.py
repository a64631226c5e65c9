"""`Hub`: what every service needs (settings, store, keys, clock), built once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from edgefleet.hub.datadir import HubKeys
from edgefleet.hub.db import Store
from edgefleet.hub.settings import HubSettings

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The system clock, as an aware UTC datetime."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Hub:
    """The running hub's dependencies; services take it as their first argument."""

    settings: HubSettings
    store: Store
    keys: HubKeys
    clock: Clock = utc_now
