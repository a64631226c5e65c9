"""`edgefleet deploy ...` and `edgefleet device why` against a real hub process whose scheduler drives the rollout."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll
from edgefleet.agent.identity import LocalIdentity
from tests.e2e.conftest import RunningHub, edgefleet, start_hub
from tests.e2e.test_releases_e2e import ok, publish_first_release, write_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    yield from start_hub(tmp_path, None, env={"EDGEFLEET_ROLLOUT_INTERVAL_SECONDS": "0.2"})


def committed(hub: RunningHub, device: LocalIdentity, version: str, seq: int) -> None:
    """The device says it now runs `version` (what the agent sends after a commit)."""
    event = {"seq": seq, "at": datetime.now(UTC).isoformat(), "app": "sensor", "to_release": version}
    answer = httpx.post(
        f"{hub.url}/api/v1/device/events",
        json={"events": [{**event, "status": "committed"}], "dropped": 0},
        headers={"Authorization": f"Bearer {device.token(now=datetime.now(UTC))}"},
        verify=ssl.create_default_context(cafile=str(hub.ca)),
    )
    assert answer.status_code == 200, answer.text


def test_deploy_with_the_cli(hub: RunningHub, tmp_path: Path) -> None:
    keys = publish_first_release(hub, tmp_path)
    build = tmp_path / "build-2.0.0"
    ok(edgefleet("release", "build", str(write_app(tmp_path, "2.0.0")), "--out", str(build)))
    ok(edgefleet("release", "sign", str(build), "--keys", str(keys)))
    code, drawn = hub.terminal("release", "push", str(build))  # a person at a terminal sees the upload's bar
    assert code == 0, drawn
    assert "uploading sensor@2.0.0" in drawn
    assert "━━━━━━━━━━" in drawn
    assert "published: sensor@2.0.0" in drawn
    token = json.loads(ok(hub.cli("token", "create", "--fleet", "f1", "--tag", "env=prod", "--uses", "4", "--json")))
    with DeviceClient.connect(hub.url, ca=hub.ca) as client:
        devices = [enroll(client, tmp_path / f"d{i}", token=token["token"], arch="arm64") for i in range(3)]

    bad = hub.cli("deploy", "create", "--release", "sensor@1.0.0", "--target", "env=prod and and lab")
    assert bad.returncode == 2
    assert "bad target: expected a tag" in bad.stderr
    assert "env=prod and and lab\n" in bad.stderr
    assert "             ^" in bad.stderr  # under the second `and`

    preview = json.loads(
        ok(
            hub.cli(
                "deploy",
                "preview",
                "--release",
                "sensor@1.0.0",
                "--target",
                "env=prod",
                "--name",
                "r1",
                "--waves",
                "1,100%",
                "--json",
            )
        )
    )
    assert preview["total"] == 3
    assert preview["reach"] == [1, 3]

    created = ok(
        hub.cli(
            "deploy", "create", "--release", "sensor@1.0.0", "--target", "fleet=f1 and env=prod", "--name", "r1",
            "--waves", "1,100%", "--max-failure", "0%", "--bake", "0",
        )
    )  # fmt: skip
    assert created.startswith("deployment r1 (")
    state = json.loads(ok(hub.cli("deploy", "status", "r1", "--json")))
    assert [w["size"] for w in state["waves"]] == [1, 0]
    canary = next(d for d in devices if d.device_id == preview["devices"][0]["device_id"])
    why = ok(hub.cli("device", "why", canary.device_id))
    assert why.startswith("sensor: Deployment r1 (priority 0, target: fleet=f1 and env=prod) selects this device")

    committed(hub, canary, "1.0.0", 1)
    deadline = time.monotonic() + 30
    while json.loads(ok(hub.cli("deploy", "status", "r1", "--json")))["waves"][1]["size"] < 2:
        assert time.monotonic() < deadline, "the second wave never started"
        time.sleep(0.2)
    for device in devices:
        if device is not canary:
            committed(hub, device, "1.0.0", 1)
    code, watched = hub.terminal("deploy", "status", "r1", "--watch", "--interval", "0.5")  # returns once done
    assert code == 0, watched
    assert "completed" in watched
    assert "━━━━━━━━━━━━━━━━━━━━ 100 %" in watched  # the waves' bars, full
    assert json.loads(ok(hub.cli("deploy", "status", "r1", "--json")))["deployment"]["state"] == "completed"

    # As code: the same file twice changes nothing; a new release restarts the rollout.
    spec = tmp_path / "deployments.yaml"
    declared = "deployments:\n  - name: prod\n    release: sensor@{v}\n    target: env=prod\n    priority: 5\n"
    declared += "    waves: 1,100%\n    bake: 0\n    max_failure: 0%\n    max_pending: 2\n"
    spec.write_text(declared.format(v="2.0.0"))
    assert ok(hub.cli("deploy", "apply", str(spec))).strip() == "prod: created"
    assert ok(hub.cli("deploy", "apply", str(spec))).strip() == "prod: unchanged"
    listed = json.loads(ok(hub.cli("deploy", "list", "--json")))
    assert [(d["name"], d["state"]) for d in listed] == [("r1", "completed"), ("prod", "active")]
    assert [d["max_pending"] for d in listed] == [None, 2]  # the file's pace
    assert "pause" in ok(hub.cli("deploy", "pause", "prod"))
    assert "active" in ok(hub.cli("deploy", "resume", "prod"))
    aborted = ok(hub.cli("deploy", "abort", "prod", "--rollback"))
    assert aborted.strip() == "deployment prod: rolled-back (abort with rollback by admin)"

    broken = tmp_path / "broken.yaml"
    broken.write_text("deployments:\n  - name: x\n    release: sensor@2.0.0\n    target: env=prod\n    colour: red\n")
    refused = hub.cli("deploy", "apply", str(broken))
    assert refused.returncode == 2
    assert "deployment 1: unknown key 'colour'" in refused.stderr
    audited = json.loads(ok(hub.cli("audit", "list", "--json")))
    actions = [e["action"] for e in audited]
    for action in ("deployment.create", "deployment.pause", "deployment.resume", "deployment.abort"):
        assert action in actions
