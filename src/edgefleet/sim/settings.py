"""The simulator's settings: every bound it keeps (devices, connections, workers, waits), in one object."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.protocol import Arch

MAX_DEVICES = 100_000
SHARD_SIZE = 50
"""Devices sharing one set of long-poll connections and `CALL_HEADROOM` connections for their other calls."""
CALL_HEADROOM = 4
"""Connections of a shard for events and reports, apart from its long-polls (never stuck behind them)."""
FD_RESERVE = 512
"""File descriptors kept free for everything but hub connections (state files, workers, the terminal)."""


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class SimSettings(BaseModel):
    """Configuration of one simulator process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hub_url: str = Field(pattern=r"^https?://[^\s]+$")
    token: str = Field(min_length=1, max_length=256)
    """An enrollment token with at least `devices` uses left that needs no approval."""
    ca: Path | None = None
    devices: int = Field(ge=1, le=MAX_DEVICES)
    fail_rate: float = Field(default=0.02, ge=0, le=1)
    """Share of updates that fail their health check and roll back (per device and release, from the seed)."""
    offline: float = Field(default=0.05, ge=0, le=1)
    """Share of devices without a connection during each offline period (chosen per period from the seed)."""
    offline_period: float = Field(default=300.0, gt=0, le=86_400)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    report_interval: float = Field(default=60.0, gt=0, le=3600)
    poll_wait: float = Field(default=60.0, ge=0, le=900)
    download_seconds: float = Field(default=5.0, ge=0, le=3600)
    """Mean simulated download time of an update (each one takes 0.5 to 1.5 times this, from the seed)."""
    start_seconds: float = Field(default=2.0, ge=0, le=3600)
    """Mean simulated start and health-check time of an update."""
    duration: float | None = Field(default=None, gt=0, le=30 * 86_400)
    summary_interval: float = Field(default=10.0, gt=0, le=3600)
    ramp: float = Field(default=10.0, ge=0, le=3600)
    """Seconds over which already enrolled devices make their first connection (no thundering herd)."""
    state_dir: Path | None = None
    arch: Arch = "amd64"
    policy: Path | None = None
    verify_workers: int = Field(default_factory=default_workers, ge=1, le=64)
    max_connections: int | None = Field(default=None, ge=1, le=200_000)
    """Connections to the hub at most, over all devices (default: what the file-descriptor limit allows)."""
    request_timeout: float = Field(default=30.0, gt=0, le=300)
    backoff_initial: float = Field(default=1.0, gt=0, le=60)
    backoff_max: float = Field(default=300.0, gt=0, le=3600)
    enroll_attempts: int = Field(default=5, ge=1, le=100)
    """Tries per device while the hub is unreachable during enrollment."""


def connection_budget(settings: SimSettings, fd_limit: int) -> int:
    """Connections the simulator may hold: as asked, else one per device plus headroom, within the fd limit."""
    shards = -(-settings.devices // SHARD_SIZE)
    wanted = settings.max_connections or settings.devices + CALL_HEADROOM * shards
    return max(1, min(wanted, fd_limit - FD_RESERVE))


def shard_limits(devices: int, budget: int) -> list[int]:
    """Each shard's long-poll connections: its share of `budget` after `CALL_HEADROOM` per shard (at least 1)."""
    sizes = [min(SHARD_SIZE, devices - start) for start in range(0, devices, SHARD_SIZE)]
    polls = max(0, budget - CALL_HEADROOM * len(sizes))
    return [max(1, polls * size // devices) for size in sizes]
