"""`edgefleet sim` against a real hub process over HTTPS: 50 simulated devices enroll, follow an assignment,
fail and roll back at --fail-rate 1.0, come back from --state-dir as the same devices, and stop cleanly."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.e2e.conftest import RunningHub, start_hub
from tests.e2e.test_releases_e2e import ok, publish_first_release, write_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICES = 50
T = TypeVar("T")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    yield from start_hub(tmp_path, None)


@pytest.fixture
def api(hub: RunningHub) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{hub.url}/api/v1",
        verify=ssl.create_default_context(cafile=str(hub.ca)),
        headers={"Authorization": f"Bearer {hub.admin_token}"},
        timeout=30,
    ) as client:
        yield client


@dataclass
class Sim:
    """`edgefleet sim` as a child process: progress on stderr, the JSON summary on stdout at exit."""

    process: subprocess.Popen[str]
    stdout: Path
    stderr: Path

    @classmethod
    def start(cls, tmp_path: Path, name: str, *args: str) -> Sim:
        stdout, stderr = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with stdout.open("w") as out, stderr.open("w") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "edgefleet.cli.main", "sim", *args], stdout=out, stderr=err, text=True
            )
        return cls(process, stdout, stderr)

    def progress(self) -> str:
        return self.stderr.read_text()

    def stop(self) -> tuple[int, dict[str, Any]]:
        """Ctrl-C, as an operator would; (exit code, JSON summary)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the simulator did not stop on SIGINT:\n{self.progress()}")
        text = self.stdout.read_text()
        return code, json.loads(text) if text.strip() else {}


def wait_for(check: Callable[[], T | None], *, seconds: float, what: str, sim: Sim) -> T:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if sim.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds}s:\n{sim.progress()[-3000:]}")
        time.sleep(0.5)


def simulated(api: httpx.Client) -> list[dict[str, Any]]:
    page = api.get("/devices", params={"limit": 1000}).json()
    return [device for device in page["items"] if (device.get("hostname") or "").startswith("sim-")]


def enrolled(api: httpx.Client) -> list[dict[str, Any]] | None:
    """The simulated devices once all of them have enrolled."""
    found = simulated(api)
    return found if len(found) == DEVICES else None


def states(api: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    return {device_id: api.get(f"/devices/{device_id}/state").json() for device_id in ids}


def every(
    api: httpx.Client, ids: list[str], check: Callable[[dict[str, Any]], Any]
) -> dict[str, dict[str, Any]] | None:
    """Every device's desired-beside-reported state once `check` holds for all of them."""
    found = states(api, ids)
    return found if all(check(state) for state in found.values()) else None


def sensor(state: dict[str, Any]) -> dict[str, Any]:
    return next((app for app in state["apps"] if app["app"] == "sensor"), {})


def assign_all(hub: RunningHub, api: httpx.Client, ids: list[str], release: str) -> None:
    """The first with `edgefleet device assign`, the rest through the API."""
    assert f"sensor -> {release.partition('@')[2]}" in ok(hub.cli("device", "assign", ids[0], release))
    app, _, version = release.partition("@")
    for device_id in ids[1:]:
        answer = api.post(f"/devices/{device_id}/assignments", json={"app": app, "version": version})
        assert answer.status_code == 200, answer.text


def test_simulated_devices_update_roll_back_and_come_back(hub: RunningHub, api: httpx.Client, tmp_path: Path) -> None:
    keys = publish_first_release(hub, tmp_path)
    ok(hub.cli("release", "publish", str(write_app(tmp_path, "1.1.0")), "--keys", str(keys)))
    token = json.loads(ok(hub.cli("token", "create", "--fleet", "sim", "--uses", str(DEVICES), "--json")))["token"]
    common = [
        *("--devices", str(DEVICES), "--hub", hub.url, "--ca", str(hub.ca), "--token", token),
        *("--state-dir", str(tmp_path / "sim-state"), "--seed", "7", "--offline", "0", "--json"),
        *("--poll-wait", "10", "--report-interval", "5", "--download-time", "0.5", "--start-time", "0.5"),
        *("--summary-interval", "2", "--workers", "2", "--ramp", "2"),
    ]

    # 1. They enroll for real, report as simulated devices, and all follow an assignment.
    first = Sim.start(tmp_path, "first", *common, "--fail-rate", "0")
    try:
        devices = wait_for(
            lambda: enrolled(api),
            seconds=120,
            what="50 enrollments",
            sim=first,
        )
        ids = sorted(device["id"] for device in devices)
        assert {device["status"] for device in devices} == {"accepted"}
        assign_all(hub, api, ids, "sensor@1.0.0")
        synced = wait_for(
            lambda: every(api, ids, lambda s: sensor(s).get("in_sync")),
            seconds=120,
            what="every device reporting sensor 1.0.0",
            sim=first,
        )
        assert {sensor(s)["reported"] for s in synced.values()} == {"1.0.0"}
        assert {s["updates"]["sensor"]["status"] for s in synced.values()} == {"committed"}
        shown = json.loads(ok(hub.cli("device", "show", ids[0], "--json")))
        assert shown["reported"]["simulator"] == "edgefleet sim"
        assert shown["reported"]["os"] == "simulated (edgefleet sim)"
        assert shown["reported"]["apps"]["sensor"]["services"]["main"]["state"] == "running"
        assert shown["updates"]["sensor"]["to_release"] == "1.0.0"
    finally:
        code, summary = first.stop()
    progress = first.progress()
    assert code == 0, progress
    assert "SIMULATOR, for load tests and demos" in progress
    assert f"{DEVICES} devices: online {DEVICES}" in progress
    assert (summary["enrolled"], summary["committed"], summary["failed"]) == (DEVICES, DEVICES, 0)
    assert summary["releases"] == {"sensor@1.0.0": DEVICES}
    assert "simulat" in summary["simulator"]
    assert summary["requests"]["enroll"] >= DEVICES
    assert summary["requests"]["verify"] > 0  # TUF and director metadata, manifests: fetched and checked
    assert "Traceback" not in progress

    # 2. The same devices again (the token is used up: nothing enrolls anew), now every update fails.
    second = Sim.start(tmp_path, "second", *common, "--fail-rate", "1.0")
    try:
        wait_for(
            lambda: f"{DEVICES} devices: online {DEVICES}" in second.progress(),
            seconds=60,
            what="the devices coming back",
            sim=second,
        )
        assign_all(hub, api, ids, "sensor@1.1.0")
        rolled_back = wait_for(
            lambda: every(api, ids, lambda s: s["updates"]["sensor"]["to_release"] == "1.1.0"),
            seconds=120,
            what="every device reporting its failed update",
            sim=second,
        )
        for state in rolled_back.values():
            update = state["updates"]["sensor"]
            assert (update["status"], update["from_release"], update["service"]) == ("failed", "1.0.0", "main")
            assert "simulated failure" in update["reason"]
        wait_for(
            lambda: every(api, ids, lambda s: "rolled back" in (s["last_error"] or "")),
            seconds=30,
            what="every device reporting it runs 1.0.0 again",
            sim=second,
        )
        reported = {sensor(s)["reported"] for s in states(api, ids).values()}
        assert reported == {"1.0.0"}  # rolled back: the previous release runs
        text = ok(hub.cli("device", "show", ids[0]))
        assert "1.1.0 -> 1.0.0" in text
    finally:
        code, summary = second.stop()
    assert code == 0, second.progress()
    assert (summary["committed"], summary["failed"]) == (0, DEVICES)
    assert summary["releases"] == {"sensor@1.0.0": DEVICES}
    assert len(simulated(api)) == DEVICES

    # 3. A token with no uses left: the simulator says so and exits, instead of simulating nothing.
    refused = Sim.start(tmp_path, "refused", *common[:8], "--duration", "60")
    assert refused.process.wait(timeout=60) == 3
    assert "--token must be an enrollment token for at least 50 devices" in refused.progress()
    assert "Traceback" not in refused.progress()
