"""`edgefleet agent run|plan` as a device owner runs them: config file, a hub over HTTPS, real Podman."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.agent.engine.docker import DockerEngine
from tests.e2e.conftest import RunningHub, edgefleet, start_hub
from tests.integration.agent.conftest import app_name
from tests.integration.agent.test_agent_runner import app_text
from tests.integration.agent.test_engine import containers, wait_running

pytestmark = pytest.mark.xdist_group("podman")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    yield from start_hub(tmp_path, None)


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return edgefleet("agent", *args, timeout=120)


def test_agent_run_once_then_plan(
    hub: RunningHub, tmp_path: Path, engine_socket: str, busybox: str, apps: list[str], engine: DockerEngine
) -> None:
    keys = tmp_path / "keys"
    assert edgefleet("keys", "init", "--dir", str(keys)).returncode == 0
    assert hub.cli("repo", "init", "--keys", str(keys)).returncode == 0
    app = app_name(apps, "cli")
    source = tmp_path / "app"
    source.mkdir()
    (source / "compose.yaml").write_text(app_text(app, "1.0.0", busybox))
    published = hub.cli("release", "publish", str(source), "--keys", str(keys))
    assert published.returncode == 0, published.stderr
    token = json.loads(hub.cli("token", "create", "--fleet", "lab", "--json").stdout)["token"]
    (tmp_path / "policy.toml").write_text('allow = ["network"]\n')
    config = tmp_path / "agent.toml"
    config.write_text(
        f'hub_url = "{hub.url}"\nca = "{hub.ca}"\nenrollment_token = "{token}"\ndata_dir = "{tmp_path / "dev"}"\n'
        f'engine = "{engine_socket}"\npolicy = "{tmp_path / "policy.toml"}"\narch = "amd64"\npoll_wait = 0\n'
        f'repository_root = "{keys / "repository" / "root.json"}"\n'
    )

    first = agent("run", "--config", str(config), "--once")
    assert first.returncode == 0, first.stderr
    device = json.loads(hub.cli("device", "list", "--json").stdout)[0]["id"]
    assert (tmp_path / "dev" / "device.key").stat().st_mode & 0o777 == 0o600
    assert hub.cli("device", "assign", device, f"{app}@1.0.0").returncode == 0

    second = agent("run", "--config", str(config), "--once")
    assert second.returncode == 0, second.stderr
    assert "edgefleet.agent.download: downloaded compose.yaml (" in second.stderr  # no terminal: log lines
    wait_running(engine, app, 2)
    assert "nothing to do" in agent("plan", "--config", str(config)).stdout

    for container in containers(engine, app).values():
        container.stop(timeout=1)
    planned = agent("plan", "--config", str(config)).stdout
    assert sorted(planned.split()[i + 1] for i, w in enumerate(planned.split()) if w == "start") == [
        f"{app}/db",
        f"{app}/web",
    ]
    assert len(containers(engine, app)) == 2  # plan took no step
    steps = json.loads(agent("plan", "--config", str(config), "--json").stdout)
    assert sorted((s["step"], s["service"]) for s in steps) == [("StartContainer", "db"), ("StartContainer", "web")]
    assert {s["description"] for s in steps} == {f"start {app}/db", f"start {app}/web"}

    # Left running, `edgefleet agent run` becomes the agent's own process (same PID, no command-line
    # libraries: `cli.agentd`), which starts the stopped services and stops cleanly on SIGTERM.
    process = subprocess.Popen(
        [sys.executable, "-m", "edgefleet.cli.main", "agent", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_running(engine, app, 2)
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"edgefleet.cli.agentd" in cmdline
        assert b"edgefleet.cli.main" not in cmdline
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.startswith("agent for device ")


def test_agent_config_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('hub_url = "ftp://x"\n')
    result = agent("run", "--config", str(tmp_path / "bad.toml"))
    assert result.returncode == 2
    assert result.stderr.startswith("error:")
    assert "hub_url" in result.stderr
    missing = agent("run", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2


def test_a_first_start_needs_the_image_root_pinned(hub: RunningHub, tmp_path: Path, engine_socket: str) -> None:
    keys = tmp_path / "keys"
    assert edgefleet("keys", "init", "--dir", str(keys)).returncode == 0
    initialised = hub.cli("repo", "init", "--keys", str(keys))
    digest = json.loads(edgefleet("keys", "root-digest", "--dir", str(keys), "--json").stdout)["sha256"]
    assert f"repository_root_sha256 = {digest}" in initialised.stdout
    token = json.loads(hub.cli("token", "create", "--fleet", "lab", "--uses", "3", "--json").stdout)["token"]
    (tmp_path / "policy.toml").write_text('allow = ["network"]\n')

    def run(name: str, *flags: str) -> subprocess.CompletedProcess[str]:
        config = tmp_path / f"{name}.toml"
        config.write_text(
            f'hub_url = "{hub.url}"\nca = "{hub.ca}"\nenrollment_token = "{token}"\ndata_dir = "{tmp_path / name}"\n'
            f'engine = "{engine_socket}"\npolicy = "{tmp_path / "policy.toml"}"\narch = "amd64"\npoll_wait = 0\n'
        )
        return agent("run", "--config", str(config), "--once", *flags)

    def image_root(index: int) -> str:
        devices = sorted(json.loads(hub.cli("device", "list", "--json").stdout), key=lambda d: d["enrolled_at"])
        shown = hub.cli("device", "show", devices[index]["id"]).stdout
        return next(line for line in shown.splitlines() if line.startswith("image root:"))

    refused = run("unpinned")
    assert refused.returncode == 2
    assert "\nerror: cannot start: no pinned image-repository root" in "\n" + refused.stderr
    assert json.loads(hub.cli("device", "list", "--json").stdout) == []  # the enrollment token is not spent

    assert run("by-digest", "--repository-root-sha256", digest).returncode == 0
    assert "image root:" in image_root(0)
    assert "pinned (the publisher's root" in image_root(0)
    assert run("on-trust", "--trust-first-root").returncode == 0
    assert "NOT PINNED" in image_root(1)
    other = run("wrong-digest", "--repository-root-sha256", "0" * 64)
    assert other.returncode == 2
    assert "none of the hub's 1 image-repository root versions has the pinned digest" in other.stderr
