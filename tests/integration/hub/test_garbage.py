"""Device requests, answered or refused, leave nothing for the garbage collector.

The collector's pauses are what the hub's p99 waits on at fleet scale (docs/benchmarks.md),
and they grow with what it has to traverse. Objects freed by their reference counts never
reach it; a reference cycle does: an error raised across the thread pool hop stayed in one
with its frames, about a hundred objects for each device refused (the next root's 404 on
every update, a revoked device's 403). Each case sends the same request many times with the
collector off, then counts what a collection finds, beside what the test client itself
leaves for a request to `/healthz` (a few dozen objects of its own, the same for any request).
On SQLite the lane reads the roots in the thread pool; on PostgreSQL, once this process holds
the newest roots, it answers their 404s from memory: both ways are counted.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from edgefleet import crypto
from edgefleet.agent.identity import TOKEN_LIFETIME, LocalIdentity
from tests.conftest import Fleet, auth

pytestmark = pytest.mark.integration

REQUESTS = 20
SPARE_PER_REQUEST = 10
"""Objects a request may leave beyond the test client's own; an error's cycle left about a hundred."""
NOBODY = "00000000-0000-4000-8000-000000000000"


def garbage_of(send: Callable[[], Any]) -> int:
    """Objects that a collection finds unreachable after `REQUESTS` sends (one send first, to warm caches)."""
    send()
    gc.collect()
    gc.disable()
    try:
        for _ in range(REQUESTS):
            send()
        return gc.collect()
    finally:
        gc.enable()


Send = Callable[[Fleet, LocalIdentity, str], Any]


def device_get(path: str) -> Send:
    return lambda f, d, _op: f.api.get(f"/api/v1{path}", headers=auth(d.token(now=f.clock())))


def report(properties: Callable[[], dict[str, Any]], device_id: str | None = None) -> Send:
    def send(f: Fleet, d: LocalIdentity, _op: str) -> Any:
        path = f"/api/v1/devices/{device_id or d.device_id}/twin/reported"
        return f.api.patch(path, headers=auth(d.token(now=f.clock())), json={"properties": properties()})

    return send


versions = (str(n) for n in itertools.count())
STRANGER = crypto.generate_key()


def stranger(fleet: Fleet) -> str:
    """A well-signed token of a device the hub never enrolled: refused once its record is read."""
    return crypto.mint_device_token(STRANGER, device_id=NOBODY, now=fleet.clock(), lifetime=TOKEN_LIFETIME)


REQUESTS_OF_A_DEVICE: dict[str, tuple[Send, int]] = {
    "target poll": (device_get("/device/target"), 200),
    "its next director root (404 from the thread pool)": (device_get("/tuf/director/99.root.json"), 404),
    "its next repository root (404)": (device_get("/tuf/repository/99.root.json"), 404),
    "a file of no such name (404)": (device_get("/tuf/director/nothing.json"), 404),
    "unchanged report": (report(lambda: {"os": "a"}), 200),
    "changed report": (report(lambda: {"os": next(versions)}), 200),
    "report to another device (403)": (report(lambda: {"os": "a"}, NOBODY), 403),
    "events": (
        lambda f, d, _op: f.device_call(d, "POST", "/device/events", json={"events": [], "dropped": 0}),
        200,
    ),
    "a token that is nobody's (401)": (
        lambda f, _d, _op: f.api.get("/api/v1/device/target", headers=auth("a.b.c")),
        401,
    ),
    "a device the hub does not know (401 from the thread pool)": (
        lambda f, _d, _op: f.api.get("/api/v1/device/target", headers=auth(stranger(f))),
        401,
    ),
    "an operator's 404 (a route of FastAPI's own thread pool)": (
        lambda f, _d, op: f.api.get(f"/api/v1/devices/{NOBODY}", headers=auth(op)),
        404,
    ),
}


@pytest.mark.parametrize(("send", "status"), REQUESTS_OF_A_DEVICE.values(), ids=REQUESTS_OF_A_DEVICE.keys())
def test_requests_leave_no_more_garbage_than_the_test_clients_own(fleet: Fleet, send: Send, status: int) -> None:
    device, operator = fleet.enroll(), fleet.operator_token("admin")
    assert send(fleet, device, operator).status_code == status
    own = garbage_of(lambda: fleet.api.get("/healthz"))
    found = garbage_of(lambda: send(fleet, device, operator))
    assert found - own <= REQUESTS * SPARE_PER_REQUEST, (found, own)


def test_a_revoked_devices_requests_leave_no_more_garbage_than_the_test_clients_own(fleet: Fleet) -> None:
    device = fleet.enroll()
    poll = device_get("/device/target")
    assert poll(fleet, device, "").status_code == 200  # held in this process's cache
    assert fleet.call("POST", f"/devices/{device.device_id}/revoke").status_code == 200
    assert poll(fleet, device, "").status_code == 403
    own = garbage_of(lambda: fleet.api.get("/healthz"))
    found = garbage_of(lambda: poll(fleet, device, ""))
    assert found - own <= REQUESTS * SPARE_PER_REQUEST, (found, own)
