"""A rollout end to end: two real agents on Podman beside 20 simulated devices, all following one deployment.

The hub is a real `hub serve` process; the agents are `edgefleet agent run` processes, each
with its own data dir and engine namespace on the session's Podman; the simulated devices are
an `edgefleet sim` process. A release reaches every device wave by wave and runs in real
containers on the agents; then a release whose service never becomes healthy goes to the
agents: the first rolls itself back onto its old containers, and the rollout pauses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.agent.engine.docker import DockerEngine
from tests.e2e.conftest import RunningHub, edgefleet, start_hub, start_sim, wait_for
from tests.integration.agent.conftest import app_name, docker_client
from tests.integration.agent.test_agent_runner import app_text

pytestmark = [pytest.mark.xdist_group("podman"), pytest.mark.slow, pytest.mark.timeout(600)]
SIMULATED = 20


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    yield from start_hub(
        tmp_path, None, env={"EDGEFLEET_ROLLOUT_INTERVAL_SECONDS": "0.3", "EDGEFLEET_LONG_POLL_MAX_SECONDS": "10"}
    )


def on_podman(engine: DockerEngine, app: str) -> list[Any]:
    """Every container of the app, whichever agent made it (`containers` keys them by service)."""
    found = docker_client(engine).containers.list(all=True, filters={"label": [f"io.edgefleet.app={app}"]})
    return sorted(found, key=lambda c: c.name)


def start_agent(hub: RunningHub, tmp_path: Path, name: str, token: str, engine_socket: str) -> subprocess.Popen[str]:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'hub_url = "{hub.url}"\nca = "{hub.ca}"\nenrollment_token = "{token}"\n'
        f'data_dir = "{tmp_path / name}"\nengine = "{engine_socket}"\npolicy = "{tmp_path / "policy.toml"}"\n'
        f'arch = "amd64"\npoll_wait = 10\nengine_namespace = "{name}"\n'
        f'repository_root = "{tmp_path / "keys" / "repository" / "root.json"}"\n'
    )
    return subprocess.Popen(
        [sys.executable, "-m", "edgefleet.cli.main", "agent", "run", "--config", str(config)],
        stdout=(tmp_path / f"{name}.log").open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )


def test_a_rollout_reaches_real_agents_and_simulated_devices(
    hub: RunningHub, tmp_path: Path, engine_socket: str, busybox: str, apps: list[str], engine: DockerEngine
) -> None:
    keys = tmp_path / "keys"
    assert edgefleet("keys", "init", "--dir", str(keys)).returncode == 0
    assert hub.cli("repo", "init", "--keys", str(keys)).returncode == 0
    app = app_name(apps, "fleet")
    for version in ("1.0.0", "2.0.0"):
        source = tmp_path / f"app-{version}"
        source.mkdir()
        text = app_text(app, version, busybox)
        if version == "2.0.0":  # a probe on a port nothing listens on: never healthy
            probe = "      probes: [{tcp: {port: 9}, retries: 2, timeout: 1s}]"
            text = text.replace("      permissions: []", f"      permissions: []\n{probe}")
            assert probe in text
        (source / "compose.yaml").write_text(text)
        published = hub.cli("release", "publish", str(source), "--keys", str(keys))
        assert published.returncode == 0, published.stderr
    (tmp_path / "policy.toml").write_text('allow = ["network"]\n')
    real = json.loads(
        hub.cli("token", "create", "--fleet", "lab", "--tag", "ring=real", "--uses", "2", "--json").stdout
    )
    simulated = hub.cli("token", "create", "--fleet", "lab", "--tag", "ring=sim", "--uses", str(SIMULATED), "--json")
    agents = [start_agent(hub, tmp_path, name, real["token"], engine_socket) for name in ("agenta", "agentb")]
    sim = start_sim(
        hub.url,
        hub.ca,
        json.loads(simulated.stdout)["token"],
        SIMULATED,
        tmp_path / "sim.json",
        *("--fail-rate", "0", "--download-time", "0.2", "--start-time", "0.2", "--poll-wait", "10"),
        *("--report-interval", "5", "--policy", str(tmp_path / "policy.toml")),
    )
    try:

        def devices() -> list[dict[str, Any]]:
            return list(json.loads(hub.cli("device", "list", "--status", "accepted", "--json").stdout))

        enrolled = wait_for(
            lambda: len(found := devices()) == SIMULATED + 2 and found, "every device to enroll", timeout=180
        )
        real_ids = sorted(d["id"] for d in enrolled if d["tags"].get("ring") == "real")
        assert len(real_ids) == 2

        def status(name: str) -> dict[str, Any]:
            result = hub.cli("deploy", "status", name, "--json")
            assert result.returncode == 0, result.stderr
            return dict(json.loads(result.stdout))

        created = hub.cli(
            "deploy", "create", "--release", f"{app}@1.0.0", "--name", "first", "--target", "fleet=lab",
            "--waves", "5,100%", "--max-failure", "0%",
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        done = wait_for(
            lambda: (s := status("first"))["deployment"]["state"] == "completed" and s, "first rollout", timeout=180
        )
        assert [w["size"] for w in done["waves"]] == [5, SIMULATED + 2 - 5]
        assert sum(w["updated"] for w in done["waves"]) == SIMULATED + 2
        on_agents = wait_for(
            lambda: len(found := on_podman(engine, app)) == 4 and {c.status for c in found} == {"running"} and found,
            "db and web running on each agent",
            timeout=60,
        )
        for name in ("agenta", "agentb"):
            mine = [c for c in on_agents if c.name.startswith(f"edgefleet-{name}_")]
            assert len(mine) == 2
            assert {c.labels["io.edgefleet.release"] for c in mine} == {"1.0.0"}
            assert {c.status for c in mine} == {"running"}
        before = {c.id for c in on_agents}

        # A release that never turns healthy, for the real agents: the canary rolls back, the rollout pauses.
        broken = hub.cli(
            "deploy", "create", "--release", f"{app}@2.0.0", "--name", "broken", "--target", "ring=real",
            "--priority", "1", "--waves", "1,100%", "--max-failure", "0%",
        )  # fmt: skip
        assert broken.returncode == 0, broken.stderr
        paused = wait_for(
            lambda: (s := status("broken"))["deployment"]["state"] == "paused" and s, "a pause", timeout=180
        )
        assert paused["deployment"]["wave"] == 1
        assert paused["deployment"]["reason"] == "wave 1: 1 of 1 devices failed (threshold 0%)"
        assert [w["size"] for w in paused["waves"]] == [1, 0]
        outcomes = {
            device_id: json.loads(hub.cli("device", "show", device_id, "--json").stdout)["updates"].get(app)
            for device_id in real_ids
        }
        canary = next(d for d, outcome in outcomes.items() if outcome and outcome["to_release"] == "2.0.0")
        assert outcomes[canary]["status"] == "failed"
        assert "unhealthy" in outcomes[canary]["reason"]
        other = next(d for d in real_ids if d != canary)
        assert outcomes[other] is None or outcomes[other]["to_release"] == "1.0.0"  # never reached
        after = on_podman(engine, app)
        assert {c.id for c in after} == before  # rolled back onto the very same containers
        assert {c.labels["io.edgefleet.release"] for c in after} == {"1.0.0"}
        assert {c.status for c in after} == {"running"}
        summary_ok = sim.poll() is None  # the simulated devices kept running throughout
        assert summary_ok
    finally:
        for process in (*agents, sim):
            process.send_signal(signal.SIGTERM)
        for process in (*agents, sim):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
