"""Benchmark: the agent's memory (RSS, PSS) and CPU while idle at a long poll, and during an update.

Runs everything for real on this machine: a hub (`edgefleet hub serve`, HTTPS, SQLite), a
registry with a static-busybox image, Podman's Docker-compatible API, and `edgefleet agent
run` as its own process. Prints medians; copy them into docs/benchmarks.md.

    .venv/bin/python bench/agent_footprint.py [--idle-seconds 120] [--poll-wait 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import edgefleet, start_hub  # noqa: E402
from tests.integration.agent.conftest import podman_service, push_busybox  # noqa: E402
from tests.integration.registry.conftest import Registry, run_registry  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes, from /proc/PID/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("Rss:", "Pss:"):
            values[parts[0]] = int(parts[1]) * 1024
    return values["Rss:"], values["Pss:"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def app_text(version: str, image: str) -> str:
    return f"""
services:
  main:
    image: {image}
    command: ["/bin/sh", "-c", "while true; do echo {version} | nc -l -p 8080; done"]
x-edgefleet:
  app: bench
  version: {version}
  architectures: [amd64, arm64]
  services:
    main: {{resources: {{memory: 32m, cpus: 0.25, pids: 32}}}}
"""


def baseline_pss() -> int:
    """PSS of an idle interpreter that has imported what the agent imports (what dominates the footprint)."""
    probe = subprocess.Popen([sys.executable, "-c", "import edgefleet.cli.agent, time; time.sleep(30)"])
    time.sleep(4)
    _, pss = memory(probe.pid)
    probe.kill()
    return pss


def main() -> None:  # one straight-line scenario
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-seconds", type=float, default=120)
    parser.add_argument("--poll-wait", type=float, default=60)
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        registry_host = stack.enter_context(run_registry(tmp, tmp / "registry"))
        image = push_busybox(Registry(host=registry_host, storage=tmp / "registry"), f"bench-{time.time_ns()}")
        hubs = start_hub(tmp, None)
        hub = next(hubs)
        stack.callback(hubs.close)  # stops the hub process
        socket = tmp / "podman.sock"
        podman = podman_service(tmp, registry_host)
        stack.callback(podman.terminate)
        while not socket.exists():
            time.sleep(0.1)

        keys = tmp / "keys"
        edgefleet("keys", "init", "--dir", str(keys))
        hub.cli("repo", "init", "--keys", str(keys))
        for version in ("1.0.0", "1.1.0"):
            app_dir = tmp / f"app-{version}"
            app_dir.mkdir()
            (app_dir / "compose.yaml").write_text(app_text(version, image))
            result = hub.cli("release", "publish", str(app_dir), "--keys", str(keys))
            assert result.returncode == 0, result.stderr
        token = json.loads(hub.cli("token", "create", "--fleet", "bench", "--json").stdout)["token"]
        (tmp / "policy.toml").write_text("allow = []\n")
        config = tmp / "agent.toml"
        config.write_text(
            f'hub_url = "{hub.url}"\nca = "{hub.ca}"\nenrollment_token = "{token}"\n'
            f'data_dir = "{tmp / "agent"}"\nengine = "unix://{socket}"\npolicy = "{tmp / "policy.toml"}"\n'
            f"poll_wait = {args.poll_wait}\n"
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "edgefleet.cli.agent", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "agent.log").open("w"),
        )
        stack.callback(agent.terminate)
        device = None
        while device is None:
            time.sleep(0.5)
            listed = json.loads(hub.cli("device", "list", "--json").stdout)
            device = listed[0]["id"] if listed else None

        assert hub.cli("device", "assign", device, "bench@1.0.0").returncode == 0
        _wait_running(socket, "bench", "1.0.0")
        time.sleep(3)  # settle after the first install

        samples = []
        start_cpu, start = cpu_seconds(agent.pid), time.monotonic()
        while time.monotonic() - start < args.idle_seconds:
            samples.append(memory(agent.pid))
            time.sleep(5)
        idle_cpu = (cpu_seconds(agent.pid) - start_cpu) / (time.monotonic() - start)

        update_start_cpu, update_start = cpu_seconds(agent.pid), time.monotonic()
        assert hub.cli("device", "assign", device, "bench@1.1.0").returncode == 0
        peak = (0, 0)
        while not _running(socket, "bench", "1.1.0"):
            rss, pss = memory(agent.pid)
            peak = (max(peak[0], rss), max(peak[1], pss))
            time.sleep(0.05)
        update_seconds = time.monotonic() - update_start
        update_cpu = cpu_seconds(agent.pid) - update_start_cpu

        mib = 1024 * 1024
        machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} cores"
        print(f"machine: {machine}, Python {platform.python_version()}")
        print(f"idle ({args.idle_seconds:.0f}s at poll_wait {args.poll_wait:.0f}s, {len(samples)} samples):")
        print(f"  RSS median {statistics.median(s[0] for s in samples) / mib:.1f} MiB")
        print(f"  PSS median {statistics.median(s[1] for s in samples) / mib:.1f} MiB")
        print(f"  CPU {idle_cpu * 100:.3f}% of one core")
        print(f"update 1.0.0 -> 1.1.0 (verify, download, recreate one container): {update_seconds:.2f}s wall")
        print(f"  CPU {update_cpu:.2f}s; peak RSS {peak[0] / mib:.1f} MiB, peak PSS {peak[1] / mib:.1f} MiB")
        print(f"baseline: an idle interpreter with the agent's imports: PSS {baseline_pss() / mib:.1f} MiB")
        _cleanup(socket)


def _client(socket: Path) -> docker.DockerClient:
    return docker.DockerClient(base_url=f"unix://{socket}", version="1.41")


def _running(socket: Path, app: str, version: str) -> bool:
    client = _client(socket)
    try:
        found = client.containers.list(
            filters={"label": [f"io.edgefleet.app={app}", f"io.edgefleet.release={version}"]}
        )
        return any(c.status == "running" for c in found)
    finally:
        client.close()


def _wait_running(socket: Path, app: str, version: str) -> None:
    deadline = time.monotonic() + 120
    while not _running(socket, app, version):
        if time.monotonic() > deadline:
            raise SystemExit(f"{app}@{version} did not start")
        time.sleep(0.2)


def _cleanup(socket: Path) -> None:
    client = _client(socket)
    for container in client.containers.list(all=True, filters={"label": "io.edgefleet.app=bench"}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": "io.edgefleet.app=bench"}):
        network.remove()
    client.close()


if __name__ == "__main__":
    main()
