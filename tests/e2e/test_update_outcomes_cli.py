"""The CLI against a real hub over HTTPS: a device's update outcome in `device show`, and `device retry`."""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll
from tests.e2e.conftest import RunningHub
from tests.e2e.test_releases_e2e import ok, publish_first_release

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_update_outcomes_and_retry_with_the_cli(sqlite_hub: RunningHub, tmp_path: Path) -> None:
    hub = sqlite_hub
    publish_first_release(hub, tmp_path)
    token = json.loads(ok(hub.cli("token", "create", "--fleet", "lab", "--json")))["token"]
    with DeviceClient.connect(hub.url, ca=hub.ca) as client:
        device = enroll(client, tmp_path / "device", token=token, arch="arm64")
    device_id = device.device_id
    ok(hub.cli("device", "assign", device_id, "sensor@1.0.0"))

    logs = "".join(f"line {n}\n" for n in range(30)) + "\x1b[31mpanic: no config\x1b[0m\n"
    batch = {
        "events": [
            {
                "seq": 1,
                "at": "2026-11-22T09:00:00+00:00",
                "kind": "update",
                "app": "sensor",
                "to_release": "1.0.0",
                "status": "failed",
                "service": "main",
                "reason": "main: exited with code 3",  # as the agent words it: the service named once when shown
                "logs": logs,
            }
        ],
        "dropped": 0,
    }
    answer = httpx.post(
        f"{hub.url}/api/v1/device/events",
        json=batch,
        headers={"Authorization": f"Bearer {device.token(now=datetime.now(UTC))}"},
        verify=ssl.create_default_context(cafile=str(hub.ca)),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"acknowledged": 1}

    text = ok(hub.cli("device", "show", device_id))
    assert "updates (latest per app):" in text
    assert "  sensor  failed  - -> 1.0.0  at 2026-11-22T09:00:00Z  main: exited with code 3" in text
    shown_logs = [line for line in text.splitlines() if line.startswith("    | ")]
    assert len(shown_logs) == 10  # the last lines; --json has them all
    assert shown_logs[-1] == "    | ?[31mpanic: no config?[0m"  # escape codes never reach the terminal
    assert "\x1b" not in text
    full = json.loads(ok(hub.cli("device", "show", device_id, "--json")))
    assert full["updates"]["sensor"]["logs"] == logs
    assert full["updates"]["sensor"]["status"] == "failed"

    assert ok(hub.cli("device", "retry", device_id, "--app", "sensor")).strip() == (
        f"{device_id}: sensor@1.0.0 retry 1: the device tries it again"
    )
    assert f"{device_id}: sensor@1.0.0 retry 2" in ok(hub.cli("device", "retry", device_id))
    rows = json.loads(ok(hub.cli("device", "assignments", device_id, "--json")))
    assert [(r["app"], r["retry"]) for r in rows] == [("sensor", 2)]
    audited = json.loads(ok(hub.cli("audit", "list", "--json")))
    assert [e["actor"] for e in audited if e["action"] == "device.retry"] == ["user:admin"] * 2
    assert [e["actor"] for e in audited if e["action"] == "device.update.failed"] == [f"device:{device_id}"]

    missing = hub.cli("device", "retry", device_id, "--app", "analytics")
    assert (missing.returncode, "assignment_not_found" in missing.stderr) == (3, True)
    unknown = hub.cli("device", "retry", "00000000-0000-4000-8000-000000000000")
    assert (unknown.returncode, "device_not_found" in unknown.stderr) == (3, True)
    assert "Traceback" not in missing.stderr + unknown.stderr
    assert "audit log intact" in ok(hub.cli("audit", "verify"))
