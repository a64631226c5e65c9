"""The dashboard in a real browser against a real hub with simulated devices.

One `hub serve` (SQLite) and one `edgefleet sim` process with 8 enrolled simulated devices.
An admin logs in, checks the overview's counts against the API's, filters the device list,
opens a device, watches a rollout's progress change without reloading and pauses it; a
viewer sees no controls, and the request the viewer forges anyway is refused.
"""

from __future__ import annotations

import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningHub, edgefleet, start_hub, start_sim, wait_for
from tests.e2e.test_releases_e2e import ok, publish_first_release, write_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICES = 8


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningHub]:
    monkeypatch.setenv("EDGEFLEET_ROLLOUT_INTERVAL_SECONDS", "0.3")
    monkeypatch.setenv("EDGEFLEET_LONG_POLL_MAX_SECONDS", "10")
    monkeypatch.setenv("EDGEFLEET_WEB_STREAM_INTERVAL_SECONDS", "0.5")
    yield from start_hub(tmp_path, None)


@pytest.fixture
def api(hub: RunningHub) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(hub.ca))
    with httpx.Client(
        base_url=f"{hub.url}/api/v1", verify=context, headers={"Authorization": f"Bearer {hub.admin_token}"}
    ) as client:
        yield client


@pytest.fixture
def fleet(hub: RunningHub, api: httpx.Client, tmp_path: Path) -> Iterator[list[str]]:
    """Two signed releases published, and 8 simulated devices enrolled; yields their ids."""
    keys = publish_first_release(hub, tmp_path)
    build = tmp_path / "build-1.1.0"
    ok(edgefleet("release", "build", str(write_app(tmp_path, "1.1.0")), "--out", str(build)))
    ok(edgefleet("release", "sign", str(build), "--keys", str(keys)))
    ok(hub.cli("release", "push", str(build)))
    created = api.post("/enrollment-tokens", json={"fleet": "plant", "tags": {"env": "prod"}, "uses": DEVICES})
    assert created.status_code == 201, created.text
    sim = start_sim(
        hub.url,
        hub.ca,
        created.json()["token"],
        DEVICES,
        tmp_path / "sim.json",
        *("--seed", "7", "--fail-rate", "0", "--download-time", "0.5", "--start-time", "0.5"),
        *("--report-interval", "2", "--poll-wait", "10", "--summary-interval", "5"),
    )
    try:

        def accepted() -> list[str]:
            items = api.get("/devices", params={"status": "accepted"}).json()["items"]
            return [d["id"] for d in items] if len(items) == DEVICES else []

        yield wait_for(accepted, f"{DEVICES} enrolled simulated devices")
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sim.kill()


def running_versions(api: httpx.Client, device_ids: list[str]) -> dict[str, str | None]:
    found = {}
    for device_id in device_ids:
        state = api.get(f"/devices/{device_id}/state").json()
        apps = {a["app"]: a["reported"] for a in state["apps"]}
        found[device_id] = apps.get("sensor")
    return found


NETWORK_CHANGED = "ERR_NETWORK_CHANGED"


def visit(page: Any, url: str, *, tries: int = 3) -> None:
    """`page.goto`, again when Chromium dropped the request because a network interface changed.

    The Podman tests on the other worker create and remove bridges, and Chromium cancels the
    requests in flight whenever the host's interfaces change (net::ERR_NETWORK_CHANGED).
    """
    from playwright.sync_api import Error

    for attempt in range(1, tries + 1):
        try:
            page.goto(url)
            return
        except Error as exc:
            if NETWORK_CHANGED not in str(exc) or attempt == tries:
                raise


def follow(page: Any, selector: str, *, tries: int = 3) -> None:
    """Click a link; again when Chromium showed its error page for a dropped navigation (see `visit`)."""
    start = page.url
    for _ in range(tries):
        page.click(selector)
        page.wait_for_load_state()
        if not page.url.startswith("chrome-error://"):
            return
        visit(page, start)
    raise AssertionError(f"following {selector} from {start} failed {tries} times")


@pytest.mark.timeout(600)
def test_the_dashboard_in_a_browser(
    hub: RunningHub, api: httpx.Client, fleet: list[str], chromium: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect  # the chromium fixture has checked it is there

    # Everyone on 1.0.0 first, so the overview has a release to count.
    created = api.post("/deployments", json={"name": "base", "app": "sensor", "version": "1.0.0", "target": "env=prod"})
    assert created.status_code == 201, created.text
    wait_for(lambda: set(running_versions(api, fleet).values()) == {"1.0.0"}, "every device on 1.0.0")
    special = fleet[3]
    assert api.patch(f"/devices/{special}/tags", json={"set": {"line": "b"}, "remove": []}).status_code == 200

    context = chromium.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)

    # Log in
    visit(page, f"{hub.url}/ui/")
    expect(page).to_have_url(f"{hub.url}/ui/login?reason=login_required&next=/ui/")
    page.screenshot(path=screenshots / "01-login.png", full_page=True)
    page.fill("#token", "efa_0123456789abcdef_" + "A" * 43)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("message")).to_contain_text("unknown API token")
    page.fill("#token", hub.admin_token)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("who")).to_have_text("admin (admin)")
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["__Host-edgefleet_session"]
    assert session["httpOnly"]
    assert session["secure"]
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it

    # The overview's counts are the API's
    devices = api.get("/devices").json()["items"]
    on_release = list(running_versions(api, fleet).values()).count("1.0.0")
    visit(page, f"{hub.url}/ui/")
    assert int(page.get_by_test_id("count-total").inner_text()) == len(devices) == DEVICES
    states = {
        s: int(page.get_by_test_id(f"count-{s}").inner_text()) for s in ("online", "offline", "updating", "failed")
    }
    assert sum(states.values()) == sum(1 for d in devices if d["status"] == "accepted")
    assert states["online"] == DEVICES
    release_row = page.locator("[data-testid=chart-release] tr", has_text="sensor@1.0.0")
    assert int(release_row.get_by_test_id("release-count").inner_text()) == on_release == DEVICES
    page.screenshot(path=screenshots / "02-overview.png", full_page=True)

    # Filter the device list (htmx swaps the table in place)
    follow(page, "nav >> text=Devices")
    expect(page.get_by_test_id("device-row")).to_have_count(DEVICES)
    page.evaluate("window.__stayed = true")
    page.fill("input[name=tag]", "line=b")
    page.press("input[name=tag]", "Enter")
    expect(page.get_by_test_id("device-row")).to_have_count(1)
    assert page.evaluate("window.__stayed === true")  # no page load
    assert "tag=line%3Db" in page.url
    page.screenshot(path=screenshots / "03-devices-filtered.png", full_page=True)

    # Open a device
    follow(page, f"a[href='/ui/devices/{special}']")
    expect(page.get_by_test_id("device-id")).to_have_text(special)
    expect(page.get_by_test_id("why")).to_contain_text("Deployment base")
    expect(page.get_by_test_id("apps")).to_contain_text("1.0.0")
    page.screenshot(path=screenshots / "04-device.png", full_page=True)

    # Start a rollout and watch it move without reloading
    body = {"name": "next", "app": "sensor", "version": "1.1.0", "target": "env=prod", "priority": 1}
    created = api.post("/deployments", json={**body, "waves": "1,4,100%", "bake_seconds": 6})
    assert created.status_code == 201, created.text
    visit(page, f"{hub.url}/ui/deployments/next")
    page.evaluate("window.__stayed = true")

    def updated() -> int:
        return sum(int(cell.inner_text()) for cell in page.get_by_test_id("updated").all())

    first = updated()
    wait_for(lambda: updated() > first, "the progress bars to move", timeout=60)
    assert page.evaluate("window.__stayed === true")  # changed by server-sent events, not a reload
    page.screenshot(path=screenshots / "05-deployment-live.png", full_page=True)
    expect(page.get_by_test_id("deployment-state")).to_have_text("active")

    # Pause it
    page.get_by_test_id("pause").click()
    expect(page.get_by_test_id("deployment-state")).to_have_text("paused")
    expect(page.get_by_test_id("deployment-reason")).to_contain_text("pause by admin")
    assert api.get("/deployments/next").json()["deployment"]["state"] == "paused"
    page.screenshot(path=screenshots / "06-deployment-paused.png", full_page=True)

    for name, path in (("07-deployments", "/ui/deployments"), ("08-releases", "/ui/releases")):
        visit(page, f"{hub.url}{path}")
        page.screenshot(path=screenshots / f"{name}.png", full_page=True)
    visit(page, f"{hub.url}/ui/audit")
    expect(page.get_by_test_id("verify")).to_contain_text("Chain verified")
    page.screenshot(path=screenshots / "09-audit.png", full_page=True)

    # A viewer sees no controls, and a forged request is refused
    assert api.post("/users", json={"name": "vera", "role": "viewer"}).status_code == 201
    viewer_token = api.post("/api-tokens", json={"user": "vera"}).json()["token"]
    viewer = chromium.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    view = viewer.new_page()
    view.set_default_timeout(20_000)
    visit(view, f"{hub.url}/ui/login")
    view.fill("#token", viewer_token)
    view.click("button[type=submit]")
    expect(view.get_by_test_id("who")).to_have_text("vera (viewer)")
    visit(view, f"{hub.url}/ui/deployments/next")
    expect(view.get_by_test_id("deployment-state")).to_have_text("paused")
    expect(view.get_by_test_id("controls")).to_have_count(0)
    expect(view.get_by_test_id("resume")).to_have_count(0)
    view.screenshot(path=screenshots / "10-viewer-deployment.png", full_page=True)
    forged = view.evaluate(
        """async () => {
            const csrf = document.querySelector('input[name=csrf]').value;
            const answer = await fetch('/ui/deployments/next/resume', {
                method: 'POST',
                headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                body: 'csrf=' + encodeURIComponent(csrf),
            });
            return [answer.status, await answer.text()];
        }"""
    )
    assert forged[0] == 403
    assert "needs the operator role; you are viewer" in forged[1]
    assert api.get("/deployments/next").json()["deployment"]["state"] == "paused"
    refusals = [(e["actor"], e["action"], e["outcome"]) for e in api.get("/audit").json()]
    assert ("user:vera", "deployment.resume", "refused:insufficient_role") in refusals

    # Logging out ends the session
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("message")).to_have_text("You are logged out.")
    visit(page, f"{hub.url}/ui/devices")
    expect(page).to_have_url(f"{hub.url}/ui/login?reason=login_required&next=/ui/devices")
    context.close()
    viewer.close()
