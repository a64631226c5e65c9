"""A shard's connection to the hub: the agent's own requests (`agent.client.Call`) over `sim.wire.WireClient`.

Devices are spread over shards of `SHARD_SIZE`, each with two bounded sets of connections of
its own: one for long-polls (one per device, unless the connection budget is smaller: then
polls wait for a free connection) and a few for events and reports, which so never wait
behind a held poll. All trust the fleet CA through one shared TLS context. Requests are
built, signed and read by the agent's functions, so the simulator speaks exactly the
agent's protocol; it sends them with its own lean client, not the agent's httpx, whose cost
per request was most of a 10,000-device simulator's CPU. Transport errors become
`HubUnreachableError` here; every request is counted with its duration, and every answer of
400 or more as an error.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from edgefleet.agent.client import (
    Call,
    acknowledged,
    checked,
    events_call,
    report_call,
    target_answer,
    target_call,
)
from edgefleet.agent.errors import HubUnreachableError
from edgefleet.agent.identity import LocalIdentity
from edgefleet.protocol import TargetState
from edgefleet.sim.settings import CALL_HEADROOM, SimSettings, connection_budget, shard_limits
from edgefleet.sim.stats import Counters
from edgefleet.sim.wire import WireClient


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Link:
    """Device requests over one shard's pool."""

    def __init__(
        self,
        *,
        polls: WireClient,
        calls: WireClient,
        counters: Counters,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._polls = polls
        self._calls = calls
        self._counters = counters
        self._clock = clock

    async def send(self, call: Call, *, kind: str) -> httpx.Response:
        http = self._polls if kind == "poll" else self._calls
        started = time.monotonic()
        try:
            response = await http.request(**call.arguments(now=self._clock(), timeout=http.timeout))
        except httpx.HTTPError as exc:
            self._counters.error(kind)
            raise HubUnreachableError(f"hub unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            self._counters.error(kind)
        else:
            self._counters.request(kind, time.monotonic() - started)
        return response

    async def target_state(
        self, identity: LocalIdentity, *, wait: float, etag: str | None
    ) -> tuple[TargetState | None, str | None]:
        """Long-poll the device's target state (see `DeviceClient.target_state`)."""
        return target_answer(await self.send(target_call(identity, wait=wait, etag=etag), kind="poll"), etag)

    async def events(self, identity: LocalIdentity, events: list[dict[str, Any]], *, dropped: int) -> int:
        """Deliver events; the highest sequence number the hub has recorded (see `DeviceClient.events`)."""
        return acknowledged(await self.send(events_call(identity, events, dropped=dropped), kind="events"))

    async def report(self, identity: LocalIdentity, properties: dict[str, Any]) -> None:
        """Merge the device's reported properties into its twin (see `DeviceClient.report`)."""
        checked(await self.send(report_call(identity, properties), kind="report"))

    async def aclose(self) -> None:
        await self._polls.aclose()
        await self._calls.aclose()


def open_links(settings: SimSettings, counters: Counters, *, fd_limit: int) -> list[Link]:
    """One `Link` per shard of devices, sharing the connection budget the file-descriptor limit allows."""
    context = ssl.create_default_context(cafile=str(settings.ca)) if settings.ca else None
    base = settings.hub_url.rstrip("/")
    # A poll waits for a free connection as long as it takes (at most one per device waits); a call
    # waits no longer than its own timeout.
    poll_timeout = httpx.Timeout(settings.request_timeout, pool=None)
    links = []
    for limit in shard_limits(settings.devices, connection_budget(settings, fd_limit)):
        polls = WireClient(base_url=base, verify=context, limit=limit, timeout=poll_timeout)
        calls = WireClient(
            base_url=base, verify=context, limit=CALL_HEADROOM, timeout=httpx.Timeout(settings.request_timeout)
        )
        links.append(Link(polls=polls, calls=calls, counters=counters))
    return links
