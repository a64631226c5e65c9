"""The device fast lane answers as the routes do, and hands on everything it is unsure of.

`hub.api.fastlane.DeviceFastLane` answers target polls and unchanged state reports from the
caches before FastAPI's routing. Each test sends the same request to the hub's app and to an
app of the same hub without the lane (`create_app(fast_lane=False)`), and compares status,
headers and bytes; where the lane must have answered, the routes are broken meanwhile, so
an answer can only have come from the lane.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.agent.identity import LocalIdentity
from edgefleet.hub.api.app import create_app
from edgefleet.hub.api.routes import device as device_routes
from edgefleet.hub.context import Hub
from tests.conftest import Fleet, auth
from tests.integration.hub.test_push import listener_of

pytestmark = pytest.mark.integration

TARGET = "/api/v1/device/target"


@pytest.fixture
def routes_only(hub: Hub, api: TestClient) -> Iterator[TestClient]:
    """The same hub's API without the lane: every request goes through FastAPI's routes."""
    with TestClient(create_app(hub, fast_lane=False), raise_server_exceptions=False) as client:
        if hub.store.dialect == "postgresql":  # SQLite has no listener: its commits wake directly
            listener_of(api)
            listener_of(client)
        yield client


@pytest.fixture
def device(fleet: Fleet) -> LocalIdentity:
    """An enrolled device with a reported state, its record and target held in the caches."""
    identity = fleet.enroll()
    assert report(fleet.api, fleet, identity, {"os": "a", "apps": {"x": {"version": "1.0.0"}}}).status_code == 200
    assert fleet.device_call(identity, "GET", "/device/target").status_code == 200
    return identity


def report(client: TestClient, fleet: Fleet, device: LocalIdentity, properties: Any, **kwargs: Any) -> Any:
    headers = {**auth(device.token(now=fleet.clock())), **kwargs.pop("headers", {})}
    path = kwargs.pop("path", f"/api/v1/devices/{device.device_id}/twin/reported")
    return client.patch(path, headers=headers, json={"properties": properties}, **kwargs)


def answer_of(response: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = [(name, value) for name, value in response.headers.multi_items() if name not in ("date", "server")]
    return response.status_code, response.content, headers


@contextmanager
def routes_broken(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """While inside, the routes the lane stands in for fail if they are reached."""

    def reached(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the route answered, not the lane")

    with monkeypatch.context() as patch:
        patch.setattr(device_routes, "longpoll", SimpleNamespace(settle=reached, respond=reached))
        patch.setattr(device_routes, "TwinOut", SimpleNamespace(model_validate=reached))
        patch.setattr(device_routes, "events", SimpleNamespace(record_events=reached))
        patch.setattr(device_routes, "offload", SimpleNamespace(call=reached))
        yield


def forgetting(fleet: Fleet, send: Callable[[], Any]) -> Any:
    """`send`, once this process forgot every device it held (the lane then reads what the route reads)."""
    fleet.hub.caches.changed(None)
    return send()


Request = Callable[[TestClient, Fleet, LocalIdentity, str], Any]
"""Sends one request through a client, for a device whose current target ETag is given."""

ANSWERED_BY_THE_LANE: dict[str, Request] = {
    "poll": lambda c, f, d, _tag: c.get(TARGET, headers=auth(d.token(now=f.clock()))),
    "poll with a stale etag": lambda c, f, d, _tag: c.get(
        TARGET, params={"wait": 5}, headers={**auth(d.token(now=f.clock())), "If-None-Match": '"stale"'}
    ),
    "304": lambda c, f, d, tag: c.get(TARGET, headers={**auth(d.token(now=f.clock())), "If-None-Match": tag}),
    "held until the wait ends": lambda c, f, d, tag: c.get(
        TARGET, params={"wait": "0.3"}, headers={**auth(d.token(now=f.clock())), "If-None-Match": tag}
    ),
    "bearer in lower case": lambda c, f, d, tag: c.get(
        TARGET, headers={"Authorization": f"bearer {d.token(now=f.clock())}", "If-None-Match": tag}
    ),
    "poll of a device not held": lambda c, f, d, _tag: forgetting(
        f, lambda: c.get(TARGET, headers=auth(d.token(now=f.clock())))
    ),
    "304 of a device not held": lambda c, f, d, tag: forgetting(
        f, lambda: c.get(TARGET, headers={**auth(d.token(now=f.clock())), "If-None-Match": tag})
    ),
    "unchanged report": lambda c, f, d, _tag: report(c, f, d, {"os": "a", "apps": {"x": {"version": "1.0.0"}}}),
    "unchanged report, some keys": lambda c, f, d, _tag: report(c, f, d, {"os": "a"}),
    "report deleting an absent key": lambda c, f, d, _tag: report(c, f, d, {"last_error": None}),
}


@pytest.mark.parametrize("case", ANSWERED_BY_THE_LANE)
def test_the_lane_answers_as_the_routes_do(
    fleet: Fleet, routes_only: TestClient, device: LocalIdentity, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    send = ANSWERED_BY_THE_LANE[case]
    tag = fleet.device_call(device, "GET", "/device/target").headers["etag"]
    expected = answer_of(send(routes_only, fleet, device, tag))
    assert expected[0] in (200, 304)
    with routes_broken(monkeypatch):
        assert answer_of(send(fleet.api, fleet, device, tag)) == expected


def test_the_lanes_answers_are_counted_under_the_routes_templates(fleet: Fleet, device: LocalIdentity) -> None:
    tag = fleet.device_call(device, "GET", "/device/target").headers["etag"]
    before = fleet.api.get("/metrics").text
    for _ in range(3):
        assert fleet.device_call(device, "GET", "/device/target", headers={"If-None-Match": tag}).status_code == 304
        assert report(fleet.api, fleet, device, {"os": "a"}).status_code == 200
    after = fleet.api.get("/metrics").text
    for line in (
        'edgefleet_http_requests_total{method="GET",route="/api/v1/device/target",status="304"}',
        'edgefleet_http_requests_total{method="PATCH",route="/api/v1/devices/{device_id}/twin/reported",status="200"}',
    ):
        assert counted(after, line) - counted(before, line) == 3


def counted(metrics: str, series: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(series + " ")]
    return values[0] if values else 0.0


EVENT = {
    "seq": 1,
    "at": "2026-12-01T10:00:00+00:00",
    "kind": "update",
    "app": "x",
    "from_release": "1.0.0",
    "to_release": "1.1.0",
    "status": "committed",
}

OTHER_DEVICE = "/api/v1/devices/00000000-0000-4000-8000-000000000000/twin/reported"


def raw_report(
    client: TestClient, fleet: Fleet, device: LocalIdentity, content: Any, content_type: str = "application/json"
) -> Any:
    """A report's body sent as given, with this content type."""
    headers = {**auth(device.token(now=fleet.clock())), "Content-Type": content_type}
    return client.patch(f"/api/v1/devices/{device.device_id}/twin/reported", headers=headers, content=content)


HANDED_ON: dict[str, Request] = {
    "unknown query": lambda c, f, d, _t: c.get(f"{TARGET}?wait=0&x=1", headers=auth(d.token(now=f.clock()))),
    "wait twice": lambda c, f, d, _t: c.get(f"{TARGET}?wait=0&wait=1", headers=auth(d.token(now=f.clock()))),
    "wait in exponent form": lambda c, f, d, t: c.get(
        f"{TARGET}?wait=3e-1", headers={**auth(d.token(now=f.clock())), "If-None-Match": t}
    ),
    "wait over the limit": lambda c, f, d, _t: c.get(f"{TARGET}?wait=3601", headers=auth(d.token(now=f.clock()))),
    "wait negative": lambda c, f, d, _t: c.get(f"{TARGET}?wait=-1", headers=auth(d.token(now=f.clock()))),
    "wait not a number": lambda c, f, d, _t: c.get(f"{TARGET}?wait=soon", headers=auth(d.token(now=f.clock()))),
    "etag too long": lambda c, f, d, _t: c.get(
        TARGET, headers={**auth(d.token(now=f.clock())), "If-None-Match": '"' + "a" * 200 + '"'}
    ),
    "two etags": lambda c, f, d, t: c.get(
        TARGET,
        headers=[("Authorization", f"Bearer {d.token(now=f.clock())}"), ("If-None-Match", t), ("If-None-Match", '"x"')],
    ),
    "two tokens": lambda c, f, d, t: c.get(
        TARGET,
        headers=[
            ("Authorization", "Bearer x"),
            ("Authorization", f"Bearer {d.token(now=f.clock())}"),
            ("If-None-Match", t),
        ],
    ),
    "no token": lambda c, _f, _d, _t: c.get(TARGET),
    "basic auth": lambda c, _f, _d, _t: c.get(TARGET, headers={"Authorization": "Basic dXNlcjpwYXNz"}),
    "empty bearer": lambda c, _f, _d, _t: c.get(TARGET, headers={"Authorization": "Bearer "}),
    "garbage token": lambda c, _f, _d, _t: c.get(TARGET, headers={"Authorization": "Bearer not.a.jwt"}),
    "operator token": lambda c, f, _d, _t: c.get(TARGET, headers=auth(f.admin)),
    "trailing slash": lambda c, f, d, _t: c.get(TARGET + "/", headers=auth(d.token(now=f.clock()))),
    "HEAD": lambda c, f, d, _t: c.head(TARGET, headers=auth(d.token(now=f.clock()))),
    "report as text": lambda c, f, d, _t: raw_report(c, f, d, b'{"properties": {"os": "a"}}', "text/plain"),
    "report with a charset": lambda c, f, d, _t: raw_report(
        c, f, d, b'{"properties": {"os": "a"}}', "application/json; charset=utf-8"
    ),
    "report in chunks": lambda c, f, d, _t: raw_report(c, f, d, iter([b'{"properties": ', b'{"os": "a"}}'])),
    "report not JSON": lambda c, f, d, _t: raw_report(c, f, d, b'{"properties": {"os": '),
    "report empty": lambda c, f, d, _t: raw_report(c, f, d, b""),
    "report with NaN": lambda c, f, d, _t: raw_report(c, f, d, b'{"properties": {"os": NaN}}'),
    "report with an unknown field": lambda c, f, d, _t: raw_report(c, f, d, b'{"properties": {"os": "a"}, "extra": 1}'),
    "report of a list": lambda c, f, d, _t: report(c, f, d, ["os"]),
    "report of too many keys": lambda c, f, d, _t: report(c, f, d, {f"k{i}": None for i in range(65)}),
    "report with a query": lambda c, f, d, _t: report(c, f, d, {"os": "a"}, params={"x": "1"}),
    "report to another device": lambda c, f, d, _t: report(c, f, d, {"os": "a"}, path=OTHER_DEVICE),
    "report to an upper-case id": lambda c, f, d, _t: report(
        c, f, d, {"os": "a"}, path=f"/api/v1/devices/{d.device_id.upper()}/twin/reported"
    ),
    "events as text": lambda c, f, d, _t: c.post(
        "/api/v1/device/events",
        headers={**auth(d.token(now=f.clock())), "Content-Type": "text/plain"},
        content=b'{"events": []}',
    ),
    "events not JSON": lambda c, f, d, _t: c.post(
        "/api/v1/device/events",
        headers={**auth(d.token(now=f.clock())), "Content-Type": "application/json"},
        content=b'{"events": [',
    ),
    "events out of order": lambda c, f, d, _t: c.post(
        "/api/v1/device/events",
        headers=auth(d.token(now=f.clock())),
        json={"events": [{**EVENT, "seq": 2}, EVENT]},
    ),
    "events by an operator": lambda c, f, _d, _t: c.post("/api/v1/device/events", headers=auth(f.admin), json={}),
    "events with a query": lambda c, f, d, _t: c.post(
        "/api/v1/device/events?x=1", headers=auth(d.token(now=f.clock())), json={"events": []}
    ),
    "report by an operator": lambda c, f, d, _t: c.patch(
        f"/api/v1/devices/{d.device_id}/twin/reported", headers=auth(f.admin), json={"properties": {"os": "a"}}
    ),
}


@pytest.mark.parametrize("case", HANDED_ON)
def test_what_the_lane_is_unsure_of_is_answered_by_the_routes(
    fleet: Fleet, routes_only: TestClient, device: LocalIdentity, case: str
) -> None:
    send = HANDED_ON[case]
    tag = fleet.device_call(device, "GET", "/device/target").headers["etag"]
    expected = answer_of(send(routes_only, fleet, device, tag))
    before = fleet.counts()
    assert answer_of(send(fleet.api, fleet, device, tag)) == expected
    assert expected[0] < 500
    if expected[0] >= 400:
        assert fleet.counts() == before


@pytest.mark.parametrize("held", [True, False], ids=["held", "read"])
def test_a_changed_report_is_written_by_the_lane_as_the_route_writes_it(
    fleet: Fleet, routes_only: TestClient, device: LocalIdentity, monkeypatch: pytest.MonkeyPatch, held: bool
) -> None:
    if not held:
        fleet.hub.caches.changed(None)
    with routes_broken(monkeypatch):
        answer = report(fleet.api, fleet, device, {"os": "b"})
    assert answer.json()["reported"]["os"] == "b"
    again = report(routes_only, fleet, device, {"os": "c"})  # the route's answer to the same kind of change
    assert (answer.status_code, answer.headers["content-type"]) == (again.status_code, again.headers["content-type"])
    assert {**answer.json(), "reported": None} == {**again.json(), "reported": None}
    twin = fleet.device_call(device, "GET", f"/devices/{device.device_id}/twin").json()
    assert twin["reported"]["os"] == "c"


@pytest.mark.parametrize("held", [True, False], ids=["held", "read"])
def test_events_are_recorded_by_the_lane_as_the_route_records_them(
    fleet: Fleet, routes_only: TestClient, device: LocalIdentity, monkeypatch: pytest.MonkeyPatch, held: bool
) -> None:
    def send(client: TestClient, *events: dict[str, Any]) -> Any:
        body = {"events": list(events), "dropped": 0}
        return client.post("/api/v1/device/events", headers=auth(device.token(now=fleet.clock())), json=body)

    if not held:
        fleet.hub.caches.changed(None)
    with routes_broken(monkeypatch):
        first = send(fleet.api, EVENT)
    assert first.json() == {"acknowledged": 1}
    assert answer_of(send(routes_only, EVENT)) == answer_of(first)  # a re-send: recorded once
    audited = fleet.call("GET", "/audit").json()
    assert [e["action"] for e in audited if e["target"] == f"device:{device.device_id}"].count(
        "device.update.committed"
    ) == 1
    assert fleet.call("GET", "/audit/verify").json()["ok"]


def test_a_revoked_devices_poll_and_report_are_refused_at_once(fleet: Fleet, device: LocalIdentity) -> None:
    tag = fleet.device_call(device, "GET", "/device/target").headers["etag"]
    assert fleet.call("POST", f"/devices/{device.device_id}/revoke").status_code == 200
    poll = fleet.device_call(device, "GET", "/device/target", headers={"If-None-Match": tag})
    assert (poll.status_code, poll.json()["code"]) == (403, "device_revoked")
    answer = report(fleet.api, fleet, device, {"os": "a"})
    assert (answer.status_code, answer.json()["code"]) == (403, "device_revoked")


QUERY_PARTS = st.sampled_from(["wait", "Wait", "wait ", "w", "", "x", "wait[]"])
VALUES = st.one_of(
    st.sampled_from(["0", "1", "0.25", "3600", "3600.0", "3600.5", "1e0", "inf", "nan", "-0", "0x1", "1_0", " 1", ""]),
    st.text(alphabet="0123456789.-+e", max_size=8),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.lists(st.tuples(QUERY_PARTS, VALUES), max_size=2),
    scheme=st.sampled_from(["Bearer", "bearer", "BEARER", "Bearer  ", "Token"]),
    with_tag=st.booleans(),
)
def test_any_spelling_of_a_poll_is_answered_as_the_routes_answer_it(
    fleet: Fleet,
    routes_only: TestClient,
    device: LocalIdentity,
    pairs: list[tuple[str, str]],
    scheme: str,
    with_tag: bool,
) -> None:
    query = "&".join(f"{name}={value}" for name, value in pairs)
    # A held poll would wait out its `wait`: only the current ETag's absence keeps every spelling quick.
    headers = {"Authorization": f"{scheme} {device.token(now=fleet.clock())}"}
    if with_tag:
        headers["If-None-Match"] = '"stale"'
    url = f"{TARGET}?{query}" if query else TARGET
    assert answer_of(fleet.api.get(url, headers=headers)) == answer_of(routes_only.get(url, headers=headers))
