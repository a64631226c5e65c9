"""The health verdict on a new release during its health window: pure, from observed service states.

A release fails as soon as one of its services exits, restarts more often than allowed, or
reports unhealthy; it passes when the window has ended with every service running and
each service that has a healthcheck healthy. Until then the verdict is pending. A service
with no healthcheck counts as healthy while it keeps running, which is why the agent waits
for the whole window: a release that starts crash-looping after some seconds still fails.

A service whose restart count rose since the agent's previous look is not settled: a crash
loop looked at between two crashes shows "running". It does not pass until a look finds
the count where the previous one left it, even after the window; a real crash loop ends in
an exit, a restart past the limit or the phase's deadline first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["pending", "healthy", "failed"]


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """One service's container as the engine reports it."""

    service: str
    state: str
    """created, running, restarting, exited, dead, ..."""
    health: str | None
    """healthy, unhealthy, starting, or None without a healthcheck."""
    restarts: int
    exit_code: int | None = None
    failing: str | None = None
    """The x-edgefleet probe that made it unhealthy (None: its Compose healthcheck)."""
    settled: bool = True
    """False when its restart count rose since the previous look (set by the watcher, not the engine)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    service: str | None = None
    reason: str | None = None


def verdict(services: Iterable[ServiceHealth], *, restart_limit: int, window_over: bool) -> Verdict:
    """Pass, fail or wait, for the services of one release."""
    ordered = sorted(services, key=lambda s: s.service)
    pending: ServiceHealth | None = None
    for service in ordered:
        if service.restarts > restart_limit:
            return Verdict("failed", service.service, f"restarted {service.restarts} times (limit {restart_limit})")
        if service.state in ("exited", "dead", "removing", "stopped"):
            code = "" if service.exit_code is None else f" with code {service.exit_code}"
            return Verdict("failed", service.service, f"exited{code}")
        if service.health == "unhealthy":
            what = service.failing or "its healthcheck"
            return Verdict("failed", service.service, f"{what} reports unhealthy")
        if pending is None and (service.state != "running" or service.health not in (None, "healthy")):
            pending = service
    if not window_over or any(s.state == "running" and not s.settled for s in ordered):
        return Verdict("pending")
    if pending is not None and pending.state == "restarting":
        # Between restarts Docker shows "restarting" (Podman mostly "exited"): a crash, said as one.
        code = "" if pending.exit_code is None else f" with code {pending.exit_code}"
        return Verdict(
            "failed",
            pending.service,
            f"exited{code} and was restarting at the end of the health window ({pending.restarts} restarts)",
        )
    if pending is not None:
        what = pending.health or pending.state
        return Verdict("failed", pending.service, f"not healthy by the end of the health window ({what})")
    return Verdict("healthy")
