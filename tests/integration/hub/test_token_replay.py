"""A device token makes at most one change: a replay to the same or another hub process is refused.

The state-changing device endpoints (reports, events, certificate renewal) spend the token's
`jti` in the transaction that makes the change; reads (polls, metadata) do not. The record is
in the database, so every hub process sees it, and it goes once the token has expired.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from edgefleet import crypto
from edgefleet.agent.identity import TOKEN_LIFETIME, LocalIdentity
from edgefleet.hub.api.app import create_app
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Store
from edgefleet.hub.errors import AuthenticationError, ForbiddenError
from edgefleet.hub.services.devices import admit_loaded, forget_expired_tokens
from edgefleet.hub.services.events import record_events
from edgefleet.protocol import DeviceEvents
from tests.conftest import Fleet, auth
from tests.integration.hub.test_device_events import event

Request = Callable[[LocalIdentity], tuple[str, str, dict[str, Any]]]


def report(identity: LocalIdentity, value: str = "a") -> tuple[str, str, dict[str, Any]]:
    return "PATCH", f"/devices/{identity.device_id}/twin/reported", {"json": {"properties": {"os": value}}}


def events(_identity: LocalIdentity) -> tuple[str, str, dict[str, Any]]:
    return "POST", "/device/events", {"json": {"events": [event(1)]}}


def renewal(identity: LocalIdentity) -> tuple[str, str, dict[str, Any]]:
    return "POST", "/device/certificate", {"json": {"csr": crypto.make_csr(identity.key)}}


def send(api: TestClient, token: str, request: tuple[str, str, dict[str, Any]]) -> Any:
    method, path, kwargs = request
    return api.request(method, f"/api/v1{path}", headers=auth(token), **kwargs)


@pytest.fixture
def second_hub(hub: Hub) -> Iterator[TestClient]:
    """Another hub process's view: its own store, engine and connections on the same database."""
    store = Store(hub.store.url)
    other = Hub(settings=hub.settings, store=store, keys=hub.keys, clock=hub.clock)
    with TestClient(create_app(other), raise_server_exceptions=False) as client:
        yield client
    store.dispose()


@pytest.mark.parametrize("make", [report, events, renewal], ids=["report", "events", "renewal"])
def test_a_replayed_token_makes_no_second_change(fleet: Fleet, make: Request) -> None:
    device = fleet.enroll()
    token = device.token(now=fleet.clock())
    first = send(fleet.api, token, make(device))
    assert first.status_code in (200, 201), first.text
    before = fleet.counts()
    # A report that repeats the twin changes nothing and is answered as it is (below): replay another.
    replayed = send(fleet.api, token, report(device, "b") if make is report else make(device))
    assert (replayed.status_code, replayed.json()["code"]) == (401, "token_replayed")
    refusal_audited = make is renewal  # a refused renewal is audited, as every refused renewal is
    assert fleet.counts() == {**before, "audit_log": before["audit_log"] + refusal_audited}
    # A fresh token (as agents mint for every request) is fine.
    assert send(fleet.api, device.token(now=fleet.clock()), make(device)).status_code in (200, 201)


def test_a_report_that_changes_nothing_is_answered_without_spending_or_writing(fleet: Fleet) -> None:
    device = fleet.enroll()
    token = device.token(now=fleet.clock())
    first = send(fleet.api, token, report(device))
    assert first.status_code == 200
    before = fleet.counts()
    fleet.clock.advance(timedelta(seconds=5))
    again = send(fleet.api, token, report(device))  # the same token, the same report: nothing to change
    assert (again.status_code, again.json()) == (200, first.json())  # updated_at too: nothing was written
    fresh = device.token(now=fleet.clock())
    gone = ("PATCH", f"/devices/{device.device_id}/twin/reported", {"json": {"properties": {"last_error": None}}})
    assert send(fleet.api, fresh, gone).json() == first.json()  # deleting a key it does not hold
    assert fleet.counts() == before
    # Neither spent `fresh`: it still makes a change. True is not 1 to the schema (nor to a reader of the twin).
    flag = ("PATCH", f"/devices/{device.device_id}/twin/reported", {"json": {"properties": {"disk_free": True}}})
    assert send(fleet.api, fresh, flag).status_code == 422
    one = ("PATCH", f"/devices/{device.device_id}/twin/reported", {"json": {"properties": {"disk_free": 1}}})
    assert send(fleet.api, fresh, one).json()["reported"]["disk_free"] == 1
    two = ("PATCH", f"/devices/{device.device_id}/twin/reported", {"json": {"properties": {"disk_free": 2}}})
    assert send(fleet.api, fresh, two).json()["code"] == "token_replayed"


def test_an_old_report_replayed_cannot_put_the_twin_back(fleet: Fleet) -> None:
    device = fleet.enroll()
    old = device.token(now=fleet.clock())
    assert send(fleet.api, old, report(device, "old")).status_code == 200
    assert send(fleet.api, device.token(now=fleet.clock()), report(device, "new")).status_code == 200
    assert send(fleet.api, old, report(device, "old")).status_code == 401
    assert fleet.call("GET", f"/devices/{device.device_id}/twin").json()["reported"]["os"] == "new"


def test_reads_do_not_spend_the_token(fleet: Fleet) -> None:
    device = fleet.enroll()
    token = device.token(now=fleet.clock())
    for _ in range(3):
        assert fleet.api.get("/api/v1/device/target", headers=auth(token)).status_code == 200
    assert send(fleet.api, token, report(device)).status_code == 200


def test_a_token_without_a_jti_makes_no_change(fleet: Fleet) -> None:
    device = fleet.enroll()
    claims = {"sub": device.device_id, "aud": crypto.DEVICE_TOKEN_AUDIENCE}
    now = int(fleet.clock().timestamp())
    token = jwt.encode({**claims, "iat": now, "exp": now + 60}, device.key, algorithm="ES256")
    assert fleet.api.get("/api/v1/device/target", headers=auth(token)).status_code == 200
    refused = send(fleet.api, token, report(device))
    assert (refused.status_code, refused.json()["code"]) == (401, "token_id_required")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_token_spent_on_one_hub_process_is_refused_by_another(fleet: Fleet, second_hub: TestClient) -> None:
    device = fleet.enroll()
    token = device.token(now=fleet.clock())
    assert send(fleet.api, token, report(device, "first")).status_code == 200
    replayed = send(second_hub, token, report(device, "again"))
    assert (replayed.status_code, replayed.json()["code"]) == (401, "token_replayed")

    # The same token sent to both at once: exactly one change is made.
    for attempt in range(5):
        assert race(device.token(now=fleet.clock()), [fleet.api, second_hub], events(device)) == [200, 401], attempt


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_one_batch_resent_at_once_through_two_processes_is_recorded_once(fleet: Fleet, second_hub: TestClient) -> None:
    """Each batch reads what was acknowledged only once it holds the device's row lock."""
    device = fleet.enroll()
    batch = ("POST", "/device/events", {"json": {"events": [event(1), event(2, status="committed")]}})
    answers: list[Any] = []
    apis = [fleet.api, second_hub] * 3
    tokens = [device.token(now=fleet.clock()) for _ in apis]  # each request its own token, as agents send
    threads = [
        threading.Thread(target=lambda api=api, token=token: answers.append(send(api, token, batch)))
        for api, token in zip(apis, tokens, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"acknowledged": 2})] * len(apis)
    rows = fleet.call("GET", "/audit", params={"limit": 1000}).json()
    assert sorted(r["detail"]["seq"] for r in rows if r["action"].startswith("device.update.")) == [1, 2]
    assert fleet.call("GET", "/audit/verify").json()["ok"]


def race(token: str, apis: list[TestClient], request: tuple[str, str, dict[str, Any]]) -> list[int]:
    """The statuses of `request` with `token` sent to each API at once, sorted."""
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda api=api: answers.append(send(api, token, request).status_code)) for api in apis
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(answers)


def test_spent_tokens_are_forgotten_once_they_expire(fleet: Fleet) -> None:
    devices = [fleet.enroll() for _ in range(3)]
    for device in devices:
        assert send(fleet.api, device.token(now=fleet.clock()), report(device)).status_code == 200

    def spent() -> int:
        with fleet.hub.store.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM device_token_uses")).scalar_one())

    assert spent() == 3
    fleet.clock.advance(TOKEN_LIFETIME + fleet.hub.settings.clock_leeway + timedelta(seconds=1))
    # They go in the scheduler's prune (every 30 s), not in the statement that spends a token.
    assert send(fleet.api, devices[0].token(now=fleet.clock()), report(devices[0], "b")).status_code == 200
    assert spent() == 4
    assert forget_expired_tokens(fleet.hub) == 3
    assert spent() == 1


def test_a_batch_from_a_device_revoked_after_it_was_admitted_is_refused_and_spends_nothing(fleet: Fleet) -> None:
    """The status read under the row lock decides (one statement with the token's claim on PostgreSQL)."""
    device = fleet.enroll()
    admitted = admit_loaded(fleet.hub, device.token(now=fleet.clock()))  # the record as the request saw it
    assert fleet.call("POST", f"/devices/{device.device_id}/revoke").status_code == 200
    before = spent(fleet)
    with pytest.raises(ForbiddenError) as refused:
        record_events(fleet.hub, admitted, DeviceEvents.model_validate({"events": [event(1)]}))
    assert refused.value.code == "device_not_accepted"
    assert spent(fleet) == before
    # Accepted, the same kind of batch spends its token once, and a replay of it is refused.
    other = fleet.enroll()
    caller = admit_loaded(fleet.hub, other.token(now=fleet.clock()))
    batch = DeviceEvents.model_validate({"events": [event(1)]})
    assert record_events(fleet.hub, caller, batch).acknowledged == 1
    assert spent(fleet) == before + 1
    with pytest.raises(AuthenticationError) as replayed:
        record_events(fleet.hub, caller, batch)
    assert replayed.value.code == "token_replayed"


def spent(fleet: Fleet) -> int:
    with fleet.hub.store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM device_token_uses")).scalar_one())
