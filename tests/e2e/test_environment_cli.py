"""The CLI against a real hub over HTTPS: fleet and device environment, and `device show` desired vs reported."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll
from tests.e2e.conftest import RunningHub
from tests.e2e.test_releases_e2e import publish_first_release

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_environment_and_desired_vs_reported_with_the_cli(sqlite_hub: RunningHub, tmp_path: Path) -> None:
    hub = sqlite_hub
    publish_first_release(hub, tmp_path)
    token = json.loads(ok(hub.cli("token", "create", "--fleet", "lab", "--json")))["token"]
    with DeviceClient.connect(hub.url, ca=hub.ca) as client:
        device = enroll(client, tmp_path / "device", token=token, arch="arm64")
        device_id = device.device_id
        _, etag = client.target_state(device)

        assert "lab: set REGION, MODE" in ok(hub.cli("fleet", "env", "set", "lab", "REGION=eu", "MODE=eco"))
        ok(hub.cli("device", "env", "set", device_id, "MODE=turbo", "URL=http://x/?a=b", "EMPTY="))
        listed = ok(hub.cli("device", "env", "list", device_id)).splitlines()
        assert listed == [
            "device EMPTY  = ",
            "device MODE   = turbo",
            "fleet  REGION = eu",
            "device URL    = http://x/?a=b",
        ]
        shown = json.loads(ok(hub.cli("device", "env", "list", device_id, "--json")))
        assert shown["effective"] == {"EMPTY": "", "MODE": "turbo", "REGION": "eu", "URL": "http://x/?a=b"}

        ok(hub.cli("device", "env", "unset", device_id, "MODE", "EMPTY"))
        assert json.loads(ok(hub.cli("fleet", "env", "list", "lab", "--json")))["environment"] == {
            "MODE": "eco",
            "REGION": "eu",
        }
        state, _ = client.target_state(device, etag=etag)  # what the agent's poll sees
        assert state is not None
        assert state.environment == {"MODE": "eco", "REGION": "eu", "URL": "http://x/?a=b"}

        usage = hub.cli("device", "env", "set", device_id, "NO_EQUALS")
        assert (usage.returncode, "hint: write KEY=VALUE" in usage.stderr) == (2, True)
        unset_missing = hub.cli("fleet", "env", "unset", "lab", "NEVER_SET")
        assert (unset_missing.returncode, "variable_not_set" in unset_missing.stderr) == (3, True)
        bad_name = hub.cli("fleet", "env", "set", "lab", "1X=y")
        assert (bad_name.returncode, "invalid_request" in bad_name.stderr) == (3, True)
        assert "Traceback" not in usage.stderr + unset_missing.stderr + bad_name.stderr

        ok(hub.cli("device", "assign", device_id, "sensor@1.0.0"))
        client.report(
            device,
            {
                "apps": {
                    "sensor": {
                        "version": "1.0.0",
                        "services": {
                            "main": {"state": "running"},
                            "web": {"state": "running", "health": "healthy", "restarts": 2, "image": "x@sha256:1"},
                        },
                    }
                },
                "last_error": "[bold]pull failed[/bold]\x1b[2J",  # markup shown as is, escapes never sent
                "agent_version": "0.1.0",
            },
        )
        text = ok(hub.cli("device", "show", device_id))
        assert "sensor  1.0.0 -> 1.0.0  [ok]  main: running; web: running (healthy, 2 restarts)" in text
        assert "[bold]pull failed[/bold]?[2J" in text  # device-written text: as is, but no escape codes
        assert "\x1b" not in text
        assert "reported.agent_version: 0.1.0" in text
        full = json.loads(ok(hub.cli("device", "show", device_id, "--json")))
        assert full["status"] == "accepted"
        assert [(a["app"], a["desired"], a["reported"], a["in_sync"]) for a in full["apps"]] == [
            ("sensor", "1.0.0", "1.0.0", True)
        ]
        assert full["last_error"] == "[bold]pull failed[/bold]\x1b[2J"
        assert full["environment"] == {"MODE": "eco", "REGION": "eu", "URL": "http://x/?a=b"}
        assert full["reported"]["agent_version"] == "0.1.0"
