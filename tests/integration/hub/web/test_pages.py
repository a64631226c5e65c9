"""The dashboard's pages on each database: overview counts, device filters and search, the device page,
deployments with their controls (CSRF-checked, role-checked by the services), releases, the audit log,
the live progress stream, and hostile device data that is shown escaped."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edgefleet.hub.services import rollouts
from tests.conftest import Fleet
from tests.integration.hub.test_deployments import add_devices, report
from tests.integration.hub.web.conftest import Browser, browser_for, sessions_stored
from tests.publishing import Publisher

pytestmark = pytest.mark.integration
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("sensor", "1.0.0")
    publisher.publish("sensor", "2.0.0")
    return publisher


def deployment(fleet: Fleet, **body: Any) -> dict[str, Any]:
    body = {"app": "sensor", "version": "2.0.0", "target": "env=prod", **body}
    response = fleet.call("POST", "/deployments", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def number(html: str, testid: str) -> int:
    found = re.search(rf'data-testid="{testid}">(\d+)<', html)
    assert found, f"no {testid} on the page"
    return int(found.group(1))


def test_overview_counts_devices_by_state_and_release(
    fleet: Fleet, admin_browser: Browser, publisher: Publisher
) -> None:
    running = add_devices(fleet, 3)
    report(fleet, running, "1.0.0")  # online, on sensor@1.0.0
    stale = add_devices(fleet, 2)
    with fleet.hub.store.transaction() as tx:
        for device_id in stale:
            tx.update_device(device_id, last_seen_at=fleet.clock() - timedelta(hours=1))
    broken = add_devices(fleet, 1)
    report(fleet, broken, "1.0.0", web={"state": "restarting", "health": "unhealthy"})
    fleet.call("POST", f"/devices/{broken[0]}/assignments", json={"app": "sensor", "version": "1.0.0"})
    waiting = add_devices(fleet, 1)
    assert (
        fleet.call("POST", f"/devices/{waiting[0]}/assignments", json={"app": "sensor", "version": "1.0.0"}).status_code
        == 200
    )

    page = admin_browser.get("/ui/")
    assert page.status_code == 200
    html = page.text
    assert number(html, "count-total") == 7
    assert number(html, "count-online") == 3
    assert number(html, "count-offline") == 2
    assert number(html, "count-failed") == 1
    assert number(html, "count-updating") == 1
    assert 'sensor@1.0.0</a></th><td class="num" data-testid="release-count">4<' in html
    assert '<svg class="bar"' in html  # the chart
    api_total = len(fleet.call("GET", "/devices").json()["items"])
    assert number(html, "count-total") == api_total


def test_device_list_filters_searches_and_pages(fleet: Fleet, admin_browser: Browser, publisher: Publisher) -> None:
    prod = add_devices(fleet, 4, tags={"env": "prod", "line": "a"})
    dev = add_devices(fleet, 3, tags={"env": "dev"})
    report(fleet, prod[:2], "1.0.0")

    def listed(query: str) -> set[str]:
        response = admin_browser.get(f"/ui/devices{query}")
        assert response.status_code == 200, response.text
        return set(re.findall(r'href="/ui/devices/([0-9a-f-]{36})"', response.text))

    assert listed("") == set(prod + dev)
    assert listed("?tag=env%3Ddev") == set(dev)
    assert listed("?tag=line") == set(prod)
    assert listed("?tag=fleet%3Df1") == set(prod + dev)
    assert listed("?release=sensor%401.0.0") == set(prod[:2])
    assert listed("?release=%28nothing%29") == set(prod[2:] + dev)
    assert listed("?state=online") == set(prod + dev)
    assert listed("?state=offline") == set()
    assert listed(f"?q={dev[0][-8:].upper()}") == {dev[0]}
    assert listed("?tag=env%3Dprod&release=sensor%401.0.0&q=" + prod[0][-6:]) == {prod[0]}

    for bad, message in (
        ("?state=exploded", "state must be one of"),
        ("?tag=%3Cscript%3E", "tag must be KEY"),
        ("?release=nope", "release must be APP@VERSION"),
        ("?q=" + "a" * 201, "longer than 200"),
        ("?page=0", "page"),
        ("?page=abc", "page"),
    ):
        response = admin_browser.get(f"/ui/devices{bad}")
        assert response.status_code == 400, bad
        assert message in response.text

    admin_browser = browser_for(fleet, web_page_size=3)
    first = admin_browser.get("/ui/devices")
    assert "page 1 of 3" in first.text
    assert 'href="/ui/devices?q=&amp;tag=&amp;state=&amp;release=&amp;page=2"' in first.text
    seen = set()
    for page in (1, 2, 3):
        seen |= listed(f"?page={page}")
    assert seen == set(prod + dev)
    assert len(listed("?page=99")) == 1  # past the end: the last page


def test_device_page_shows_desired_reported_services_errors_events_trail_and_why(
    fleet: Fleet, admin_browser: Browser, publisher: Publisher
) -> None:
    (device_id,) = add_devices(fleet, 1)
    deployment(fleet, name="canary", version="1.0.0", target="env=prod")
    report(fleet, [device_id], "1.0.0", web={"state": "running", "health": "healthy", "restarts": 2})
    fleet.call("PATCH", f"/devices/{device_id}/tags", json={"set": {"site": "berlin"}, "remove": []})
    with fleet.hub.store.transaction() as tx:
        device = tx.get_device(device_id)
        assert device
        tx.update_device(device_id, reported={**device.reported, "last_error": "disk almost full"})

    page = admin_browser.get(f"/ui/devices/{device_id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert device_id in html
    assert "Deployment canary (priority 0, target: env=prod) selects this device" in html
    assert "disk almost full" in html
    assert "<td>web</td>" in html
    assert "<td>2</td>" in html
    assert "device.tag" in html  # its audit trail
    assert "site=berlin" in html

    assert admin_browser.get("/ui/devices/00000000-0000-4000-8000-000000000000").status_code == 404
    assert admin_browser.get("/ui/devices/not-a-device").status_code == 404
    assert admin_browser.get("/ui/devices/" + "a" * 500).status_code in (400, 404)


def test_hostile_device_data_is_escaped_everywhere(fleet: Fleet, admin_browser: Browser, publisher: Publisher) -> None:
    (device_id,) = add_devices(fleet, 1, tags={"env": "prod"})
    with fleet.hub.store.transaction() as tx:
        tx.update_device(
            device_id,
            hostname=HOSTILE[:200],
            tags={"env": HOSTILE, HOSTILE[:60]: "x"},
            reported={
                "apps": {HOSTILE: {"version": HOSTILE, "services": {HOSTILE: {"state": HOSTILE, "restarts": HOSTILE}}}},
                "last_error": {"message": HOSTILE, "</code><script>": 1},
            },
        )
    for path in ("/ui/", "/ui/devices", f"/ui/devices/{device_id}", f"/ui/devices?q={device_id}", "/ui/audit"):
        response = admin_browser.get(path)
        assert response.status_code == 200, (path, response.text)
        assert "<script>alert" not in response.text, path
        assert "<img src=x" not in response.text, path
        assert "</code><script>" not in response.text, path
    device_page = admin_browser.get(f"/ui/devices/{device_id}").text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in device_page  # shown, as text


def test_operators_pause_resume_and_abort_through_csrf_checked_forms(
    fleet: Fleet, admin_browser: Browser, publisher: Publisher
) -> None:
    add_devices(fleet, 10)
    created = deployment(fleet, name="r1", waves="10%,100%", bake_seconds=3600)
    page = admin_browser.get("/ui/deployments/r1")
    assert page.status_code == 200
    assert 'data-testid="pause"' in page.text
    assert f'sse-connect="/ui/deployments/{created["id"]}/live"' in page.text
    assert 'data-testid="wave-1"' in page.text
    assert 'data-testid="wave-2"' in page.text
    csrf = admin_browser.csrf("/ui/deployments/r1")
    before = fleet.counts()

    # CSRF: missing, wrong, cross-origin, no origin at all -> 403 and nothing changed
    for data, origin in (
        ({"rollback": "0"}, "https://testserver"),
        ({"csrf": "A" * 43}, "https://testserver"),
        ({"csrf": csrf}, "https://evil.example"),
        ({"csrf": csrf}, "http://testserver"),
        ({"csrf": csrf}, None),
    ):
        response = admin_browser.post("/ui/deployments/r1/pause", data, origin=origin)
        assert response.status_code == 403, (data, origin)
    assert fleet.call("GET", "/deployments/r1").json()["deployment"]["state"] == "active"
    assert fleet.counts() == before

    response = admin_browser.post("/ui/deployments/r1/pause", {"csrf": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/deployments/{created['id']}"
    assert fleet.call("GET", "/deployments/r1").json()["deployment"]["state"] == "paused"
    paused = admin_browser.get("/ui/deployments/r1").text
    assert 'data-testid="resume"' in paused
    assert 'data-testid="pause"' not in paused
    assert "pause by admin" in paused

    again = admin_browser.post("/ui/deployments/r1/pause", {"csrf": csrf})
    assert again.status_code == 409
    assert "only an active one pauses" in again.text

    assert admin_browser.post("/ui/deployments/r1/resume", {"csrf": csrf}).status_code == 303
    assert fleet.call("GET", "/deployments/r1").json()["deployment"]["state"] == "active"
    assert admin_browser.post("/ui/deployments/r1/abort", {"csrf": csrf, "rollback": "1"}).status_code == 303
    assert fleet.call("GET", "/deployments/r1").json()["deployment"]["state"] == "rolled-back"
    actions = [(e["actor"], e["action"]) for e in fleet.call("GET", "/audit").json()]
    assert ("user:admin", "deployment.pause") in actions
    assert ("user:admin", "deployment.abort") in actions

    assert admin_browser.post("/ui/deployments/nope/pause", {"csrf": csrf}).status_code == 404
    assert admin_browser.post("/ui/deployments/r1/explode", {"csrf": csrf}).status_code in (400, 404, 405)


def test_a_viewer_sees_no_controls_and_a_forged_pause_is_refused(
    fleet: Fleet, browser: Browser, publisher: Publisher
) -> None:
    add_devices(fleet, 4)
    deployment(fleet, name="r1", waves="50%,100%", bake_seconds=3600)
    assert browser.login(fleet.operator_token("viewer", "vera")).status_code == 303
    page = browser.get("/ui/deployments/r1")
    assert page.status_code == 200
    for control in ('data-testid="controls"', 'data-testid="pause"', 'data-testid="abort"', "/pause", "/abort"):
        assert control not in page.text
    csrf = browser.csrf("/ui/deployments/r1")  # the logout form's: a valid token for this session
    before = fleet.counts()
    for verb in ("pause", "abort", "resume"):
        response = browser.post(f"/ui/deployments/r1/{verb}", {"csrf": csrf})
        assert response.status_code == 403, verb
        assert "needs the operator role; you are viewer" in response.text
    assert fleet.call("GET", "/deployments/r1").json()["deployment"]["state"] == "active"
    after = fleet.counts()
    assert {k: v for k, v in after.items() if k != "audit_log"} == {k: v for k, v in before.items() if k != "audit_log"}
    refusals = [(e["actor"], e["action"], e["outcome"]) for e in fleet.call("GET", "/audit").json()]
    assert ("user:vera", "deployment.pause", "refused:insufficient_role") in refusals


def test_operators_see_the_controls(fleet: Fleet, browser: Browser, publisher: Publisher) -> None:
    add_devices(fleet, 2)
    deployment(fleet, name="r1", bake_seconds=3600)
    assert browser.login(fleet.operator_token("operator", "otto")).status_code == 303
    html = browser.get("/ui/deployments/r1").text
    assert 'data-testid="pause"' in html
    assert 'data-testid="abort"' in html


def test_live_progress_streams_the_waves_and_ends_by_itself(
    fleet: Fleet, admin_browser: Browser, publisher: Publisher
) -> None:
    devices = add_devices(fleet, 4)
    created = deployment(fleet, name="r1", waves="50%,100%", bake_seconds=0)
    admin_browser = browser_for(fleet, web_stream_max_seconds=1.0, web_stream_interval_seconds=0.2)
    stream = admin_browser.get(f"/ui/deployments/{created['id']}/live")
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    body = stream.text
    assert body.startswith("retry: 1000\n\n")
    assert body.count("event: progress\n") == 1  # nothing changed: sent once
    assert 'data: <section class="progress" data-testid="progress">' in body
    assert 'data-testid="pause"' in body

    assigned = [d for d in devices if d in set(_assigned(fleet))]
    report(fleet, assigned, "2.0.0")
    fleet.clock.advance(timedelta(seconds=5))
    rollouts.tick(fleet.hub)
    later = admin_browser.get(f"/ui/deployments/{created['id']}/live").text
    assert 'data-testid="updated">2<' in later.replace("\ndata: ", "")


def _assigned(fleet: Fleet) -> set[str]:
    with fleet.hub.store.transaction(readonly=True) as tx:
        return set(tx.assignments_for_app("sensor"))


def test_live_streams_are_bounded_and_need_a_session(
    fleet: Fleet, admin_browser: Browser, publisher: Publisher
) -> None:
    add_devices(fleet, 2)
    created = deployment(fleet, name="r1")
    url = f"/ui/deployments/{created['id']}/live"
    slots = admin_browser.web_state.stream_slots
    held = [slots.take() for _ in range(slots.limit)]
    assert all(held)
    busy = admin_browser.get(url)
    assert busy.status_code == 200
    assert busy.text.startswith("retry: 10000\n")
    assert "event:" not in busy.text
    for _ in held:
        slots.give_back()
    assert slots.open == 0

    anonymous = Browser(fleet.hub)
    assert anonymous.get(url).status_code == 401
    assert admin_browser.get("/ui/deployments/nope/live").status_code == 404


def test_releases_and_audit_pages(fleet: Fleet, admin_browser: Browser, publisher: Publisher) -> None:
    releases = admin_browser.get("/ui/releases")
    assert releases.status_code == 200
    assert "sensor@1.0.0" in releases.text
    assert "sensor@2.0.0" in releases.text
    keyids = fleet.call("GET", "/repository/releases").json()[0]["signer_keyids"]
    assert keyids
    assert all(k in releases.text for k in keyids)

    assert 'data-testid="withdrawn"' not in releases.text

    audit = admin_browser.get("/ui/audit")
    assert audit.status_code == 200
    assert "web.login" in audit.text
    assert 'hx-get="/ui/audit/verify"' in audit.text
    verified = admin_browser.get("/ui/audit/verify")
    assert verified.status_code == 200
    assert "Chain verified" in verified.text
    head = fleet.call("GET", "/audit/verify").json()
    assert f"{head['head_seq']}:{head['head_hash']}" in verified.text

    admin_browser = browser_for(fleet, web_page_size=2)
    first = admin_browser.get("/ui/audit")
    older = re.search(r'href="/ui/audit\?before=(\d+)"', first.text)
    assert older
    second = admin_browser.get(f"/ui/audit?before={older.group(1)}")
    assert second.status_code == 200
    assert len(re.findall('data-testid="audit-row"', second.text)) == 2
    assert admin_browser.get("/ui/audit?before=-1").status_code == 400


def test_unknown_pages_and_root(fleet: Fleet, admin_browser: Browser) -> None:
    missing = admin_browser.get("/ui/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    root = admin_browser.get("/")
    assert root.status_code == 307
    assert root.headers["location"] == "/ui/"
    static = admin_browser.get("/ui/static/dashboard.css")
    assert static.status_code == 200
    assert admin_browser.get("/ui/static/htmx.min.js").status_code == 200
    assert admin_browser.get("/ui/static/htmx-ext-sse.js").status_code == 200
    assert sessions_stored(fleet)


def test_a_live_stream_does_not_keep_its_session_alive(fleet: Fleet, publisher: Publisher) -> None:
    add_devices(fleet, 1)
    created = deployment(fleet, name="r1")
    browser = browser_for(fleet, web_stream_max_seconds=0.3, web_stream_interval_seconds=0.1)
    url = f"/ui/deployments/{created['id']}/live"
    fleet.clock.advance(timedelta(minutes=29))
    assert "event: progress" in browser.get(url).text
    fleet.clock.advance(timedelta(minutes=2))  # 31 minutes since the last page: idle
    assert browser.get(url).status_code == 401
    assert browser.get("/ui/").status_code == 303


def test_the_releases_page_shows_a_teams_releases_and_their_revocation(
    fleet: Fleet, admin_browser: Browser, publisher: Publisher, tmp_path: Path
) -> None:
    team = Publisher.team(fleet, tmp_path, "gateway-team")
    assert publisher.delegate(team, "gateway").status_code == 201
    team.publish("gateway", "1.0.0")
    page = admin_browser.get("/ui/releases").text
    row = re.search(r"<tr>\s*<td>gateway@1\.0\.0.*?</tr>", page, flags=re.DOTALL)
    assert row is not None
    assert "role gateway-team" in row.group(0)
    assert 'data-testid="withdrawn"' not in row.group(0)
    assert publisher.revoke("gateway-team").status_code == 201
    page = admin_browser.get("/ui/releases").text
    row = re.search(r"<tr>\s*<td>gateway@1\.0\.0.*?</tr>", page, flags=re.DOTALL)
    assert row is not None
    assert 'data-testid="withdrawn"' in row.group(0)
    assert page.count('data-testid="withdrawn"') == 1  # the holders' own releases stay targets
