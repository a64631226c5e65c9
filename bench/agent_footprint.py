"""Benchmark (issue 17 point 5): the agent's memory, CPU and wire bytes, each against its target.

Runs everything for real on this machine: a hub (`edgefleet hub serve`, HTTPS, SQLite), a
registry with a static-busybox image, Podman's Docker-compatible API, and two agents as their
own processes, on one hub and one Podman socket, each with its own data dir, enrollment and
`engine_namespace`, both following the same one-service app:

- `edgefleet-agent run` (`python -m edgefleet.cli.agent`), its hub_url pointed at a
  byte-counting TCP relay in this script (plain forwarding: the TLS stays end to end);
- `edgefleet agent run` (`python -m edgefleet.cli.main agent`), straight to the hub.

Both are measured by the PID they were started as (an agent that replaces its process with
`os.execv` keeps it). The app's health window is 2 s, so an update is over in seconds and
the idle windows hold no probing.

    .venv/bin/python bench/agent_footprint.py [--idle-seconds 120] [--poll-wait 60]
        [--wire-poll-wait 5] [--wire-seconds 60] [--growth-seconds 0]
    .venv/bin/python bench/agent_footprint.py --growth-seconds 7200   # the issue's 2-hour run

In order, each figure printed on its own line with its target and "met" or "missed":

- idle PSS, each agent (target under 35 MB = 35e6 bytes): once both installed release
  1.0.0, each is restarted alone (as after a reboot; it polls with the ETag it kept, so an
  unchanged target is answered 304 and nothing is verified), and after `SETTLE_SECONDS` sampled every 5 s over
  --idle-seconds at --poll-wait: the median, and the difference between the two. PSS splits
  each shared page among the processes that map it; the hub, this script and any other
  process of this venv still share the interpreter's and some libraries' pages, so a
  device's lone agent shows somewhat more (up to RSS, printed beside, which counts them
  whole). Run it on a quiet machine.
- idle CPU, each agent (target under 1 % of one core): CPU seconds over the same window.
  Then the `edgefleet-agent` one is started again; what follows is its.
- peak PSS during an update, `edgefleet-agent` only (reported, no target): sampled about
  every 0.1 s from assigning 1.0.0 -> 1.1.0 until the hub's twin of the device reports
  1.1.0 (poll answer, verify, download, recreate one container, health window, report).
- growth over a long run, `edgefleet-agent` (target under 2 MB = 2e6 bytes), with
  --growth-seconds > 0: it stays idle at --poll-wait that long, RSS and PSS sampled every
  10 s; growth = median of the last 10 samples - median of the first 10 (of the last and
  first halves when there are fewer than 20 samples), judged by RSS: PSS also moves when
  other processes that share its pages start or exit, RSS does not (PSS printed beside).
- bytes per unchanged poll cycle on the wire, `edgefleet-agent` (target under 1 KB = 1000
  bytes), measured last: the agent is restarted (same data dir, nothing to change) with
  poll_wait --wire-poll-wait, so --wire-seconds hold enough cycles; the bytes of one cycle do
  not depend on poll_wait, only how often it comes does. The relay counts the TCP payload
  (TLS records; not TCP/IP headers) each way and splits each connection into turns: client
  bytes after server bytes start a turn (one HTTP request on the kept-alive connection), the
  turn's answer time is when the first server bytes follow. A turn answered after more than
  poll_wait/2 is a held long-poll; each one starts a poll cycle. Counted from the first held
  poll sent to the last one sent in the window: bytes up + down over the cycles between them,
  the requests (turns) per cycle, and the connections opened meanwhile (a new connection's
  TLS handshake counts as its turns and bytes). What an agent at rest sends besides its
  polls only now and then (a state report refreshed every 10 minutes) falls in a window of
  --wire-seconds only by chance; the figure is the poll cycle's own.
- baseline (no target): an idle interpreter that only imports the agent process's module.

Copy the figures into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import RunningHub, edgefleet, start_hub  # noqa: E402
from tests.integration.agent.conftest import podman_service, push_busybox  # noqa: E402
from tests.integration.registry.conftest import Registry, run_registry  # noqa: E402

from edgefleet.agent.identity import saved_device_id  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
MB = 1e6
AGENT = "edgefleet-agent"
CLI = "edgefleet agent"
MODULES = {AGENT: ["edgefleet.cli.agent"], CLI: ["edgefleet.cli.main", "agent"]}
SLUGS = {AGENT: "agent", CLI: "cli"}
SETTLE_SECONDS = 10
"""After an agent starts: its first cycle (enrolled already: verify the unchanged assignment, reconcile, report)."""


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
  update: {{health_window: 2s}}
  services:
    main: {{resources: {{memory: 32m, cpus: 0.25, pids: 32}}}}
"""


def baseline_pss() -> int:
    """PSS of an idle interpreter that has imported what the agent's process imports (what dominates the footprint)."""
    probe = subprocess.Popen([sys.executable, "-c", "import edgefleet.cli.agentd, time; time.sleep(30)"])
    time.sleep(4)
    _, pss = memory(probe.pid)
    probe.kill()
    return pss


@dataclass
class Turn:
    """One request on a connection: when the client sent it, when the first answer bytes came back."""

    sent: float
    answered: float | None = None


@dataclass
class Link:
    """One relayed connection: which way its last bytes went, its latest turn."""

    last: str = "down"
    turn: Turn | None = None


class Relay:
    """Plain TCP forwarding from 127.0.0.1:`port` to `target`, counting the bytes each way and the turns."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.chunks: list[tuple[float, str, int]] = []  # (time, "up" or "down", bytes)
        self.turns: list[Turn] = []
        self.opened: list[float] = []  # when each connection was accepted
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.opened.append(time.monotonic())
            link = Link()
            threading.Thread(target=self._pump, args=(client, server, "up", link), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "down", link), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str, link: Link) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                now = time.monotonic()
                with self.lock:
                    self.chunks.append((now, direction, len(data)))
                    if direction == "up" and link.last == "down":  # a new request
                        link.turn = Turn(sent=now)
                        self.turns.append(link.turn)
                    elif direction == "down" and link.turn is not None and link.turn.answered is None:
                        link.turn.answered = now
                    link.last = direction
                sink.sendall(data)
        for end in (source, sink):  # either side closing ends the connection
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def cycles(self, since: float, poll_wait: float) -> tuple[int, int, int, int, int]:
        """(cycles, requests, bytes up, bytes down, connections opened) between the held polls sent after `since`."""
        with self.lock:
            turns = [turn for turn in self.turns if turn.sent >= since]
            chunks = list(self.chunks)
        held = [t.sent for t in turns if t.answered is not None and t.answered - t.sent > poll_wait / 2]
        if len(held) < 2:
            raise SystemExit(f"{len(held)} held polls in the wire window: give a longer --wire-seconds")
        start, end = held[0], held[-1]
        up = sum(size for at, direction, size in chunks if start <= at < end and direction == "up")
        down = sum(size for at, direction, size in chunks if start <= at < end and direction == "down")
        requests = sum(1 for turn in turns if start <= turn.sent < end)
        opened = sum(1 for at in self.opened if start <= at < end)
        return len(held) - 1, requests, up, down, opened


def grown(values: list[int], n: int) -> float:
    """The median of the last `n` values minus the median of the first `n`."""
    return statistics.median(values[-n:]) - statistics.median(values[:n])


def verdict(figure: str, value: float, target: float, shown: str, target_shown: str) -> None:
    print(f"{figure}: {shown}; target under {target_shown}: {'met' if value < target else 'missed'}")


def main() -> None:  # one straight-line scenario
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-seconds", type=float, default=120)
    parser.add_argument("--poll-wait", type=float, default=60)
    parser.add_argument("--wire-poll-wait", type=float, default=5, help="poll_wait for the wire measurement")
    parser.add_argument("--wire-seconds", type=float, default=60, help="how long the wire is measured")
    parser.add_argument("--growth-seconds", type=float, default=0, help="a long idle run for PSS growth (0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        registry_host = stack.enter_context(run_registry(tmp, tmp / "registry"))
        image = push_busybox(Registry(host=registry_host, storage=tmp / "registry"), f"bench-{time.time_ns()}")
        hubs = start_hub(tmp, None)
        hub = next(hubs)
        stack.callback(hubs.close)  # stops the hub process
        engine = tmp / "podman.sock"
        podman = podman_service(tmp, registry_host)
        stack.callback(podman.terminate)
        while not engine.exists():
            time.sleep(0.1)
        stack.callback(_cleanup, engine)  # after the agents are stopped

        keys = tmp / "keys"
        edgefleet("keys", "init", "--dir", str(keys))
        hub.cli("repo", "init", "--keys", str(keys))
        for version in ("1.0.0", "1.1.0"):
            app_dir = tmp / f"app-{version}"
            app_dir.mkdir()
            (app_dir / "compose.yaml").write_text(app_text(version, image))
            result = hub.cli("release", "publish", str(app_dir), "--keys", str(keys))
            assert result.returncode == 0, result.stderr
        created = hub.cli("token", "create", "--fleet", "bench", "--uses", "2", "--json")
        token = json.loads(created.stdout)["token"]
        (tmp / "policy.toml").write_text("allow = []\n")
        hub_address = urlsplit(hub.url)
        relay = Relay((hub_address.hostname or "", hub_address.port or 443))
        stack.callback(relay.listener.close)
        run_id = f"{time.time_ns() // 1000 % 16**6:06x}"  # engine object names of this run's own
        urls = {AGENT: f"https://{hub_address.hostname}:{relay.port}", CLI: hub.url}

        def start(name: str, poll_wait: float) -> subprocess.Popen[bytes]:
            """The agent `name` as its own process, with its own config, data dir, namespace and log."""
            slug = SLUGS[name]
            config = tmp / f"{slug}.toml"
            config.write_text(
                f'hub_url = "{urls[name]}"\nca = "{hub.ca}"\nenrollment_token = "{token}"\n'
                f'data_dir = "{tmp / slug}"\nengine = "unix://{engine}"\npolicy = "{tmp / "policy.toml"}"\n'
                f'repository_root = "{keys / "repository" / "root.json"}"\n'
                f'poll_wait = {poll_wait}\nengine_namespace = "bench{slug}{run_id}"\n'
            )
            process = subprocess.Popen(
                [sys.executable, "-m", *MODULES[name], "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=(tmp / f"{slug}.log").open("a"),
            )
            stack.callback(_stop, process)
            return process

        agents = {name: start(name, args.poll_wait) for name in (AGENT, CLI)}
        devices: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(devices) < len(agents):
            for name, process in agents.items():
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (tmp / f"{SLUGS[name]}.log").read_text()
                    raise SystemExit(f"{name} did not enroll (exit {process.poll()}):\n{log[-3000:]}")
                if found := saved_device_id(tmp / SLUGS[name]):
                    devices[name] = found
            time.sleep(0.5)

        for device in devices.values():
            assert hub.cli("device", "assign", device, "bench@1.0.0").returncode == 0
        for device in devices.values():
            _wait_running(engine, "bench", "1.0.0", device)
        while not all(_reported(hub, device, "1.0.0") for device in devices.values()):
            time.sleep(0.5)  # its health window over, the install committed and reported
        for process in agents.values():
            _stop(process)

        # Each alone (PSS splits the pages processes share: two agents side by side would halve
        # each other's), restarted as a device's agent is after a reboot: its first cycle verifies
        # the assignment once (python-tuf loaded), then it polls, reconciles and stays idle.
        samples: dict[str, list[tuple[int, int]]] = {name: [] for name in agents}
        idle_cpu: dict[str, float] = {}
        for name in agents:
            process = start(name, args.poll_wait)
            time.sleep(SETTLE_SECONDS)
            start_cpu, idle_start = cpu_seconds(process.pid), time.monotonic()
            while time.monotonic() - idle_start < args.idle_seconds:
                samples[name].append(memory(process.pid))
                time.sleep(5)
            idle_cpu[name] = (cpu_seconds(process.pid) - start_cpu) / (time.monotonic() - idle_start)
            _stop(process)
        agent = start(AGENT, args.poll_wait)  # what follows is the edgefleet-agent one's
        time.sleep(SETTLE_SECONDS)

        update_start_cpu, update_start = cpu_seconds(agent.pid), time.monotonic()
        assert hub.cli("device", "assign", devices[AGENT], "bench@1.1.0").returncode == 0
        peak = (0, 0)
        while not _reported(hub, devices[AGENT], "1.1.0"):
            rss, pss = memory(agent.pid)
            peak = (max(peak[0], rss), max(peak[1], pss))
            time.sleep(0.05)
        update_seconds = time.monotonic() - update_start
        update_cpu = cpu_seconds(agent.pid) - update_start_cpu

        growth: list[tuple[int, int]] = []
        growth_start = time.monotonic()
        while time.monotonic() - growth_start < args.growth_seconds:
            growth.append(memory(agent.pid))
            time.sleep(10)

        agent.terminate()  # it stops once its held poll ends
        agent.wait(timeout=args.poll_wait + 30)
        wire_start = time.monotonic()
        start(AGENT, args.wire_poll_wait)
        time.sleep(args.wire_seconds)
        cycles, requests, up, down, opened = relay.cycles(wire_start, args.wire_poll_wait)

        mib = 1024 * 1024
        machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} cores"
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
        print(f"machine: {machine}, Python {platform.python_version()}, load average {load}")
        window = f"{args.idle_seconds:.0f}s at poll_wait {args.poll_wait:g}s"
        print(f"idle: {window}, each agent alone, {len(samples[AGENT])} samples")
        idle_pss = {name: statistics.median(s[1] for s in samples[name]) for name in agents}
        for name in agents:
            idle_rss = statistics.median(s[0] for s in samples[name])
            shown = f"{idle_pss[name] / MB:.1f} MB ({idle_pss[name] / mib:.1f} MiB; RSS {idle_rss / MB:.1f} MB)"
            verdict(f"idle PSS median, {name}", idle_pss[name], 35 * MB, shown, "35 MB")
        print(f"idle PSS, {CLI} - {AGENT}: {(idle_pss[CLI] - idle_pss[AGENT]) / MB:+.2f} MB")
        for name in agents:
            verdict(f"idle CPU, {name}", idle_cpu[name], 0.01, f"{idle_cpu[name] * 100:.3f}% of one core", "1%")
        print(
            f"update 1.0.0 -> 1.1.0, {AGENT} (until reported, with a 2 s health window): {update_seconds:.2f}s wall, "
            f"CPU {update_cpu:.2f}s; peak PSS {peak[1] / MB:.1f} MB, peak RSS {peak[0] / MB:.1f} MB"
        )
        if growth:
            n = min(10, len(growth) // 2)  # samples at each end
            pss_growth, rss_growth = grown([s[1] for s in growth], n), grown([s[0] for s in growth], n)
            # Judged by RSS: PSS also moves when processes sharing its pages start or end (a test suite beside).
            shown = f"{rss_growth / MB:+.2f} MB over {args.growth_seconds:.0f}s (PSS {pss_growth / MB:+.2f} MB)"
            verdict(f"RSS growth, {AGENT}", rss_growth, 2 * MB, f"{shown}, last {n} - first {n} samples", "2 MB")
        per_cycle = (up + down) / cycles
        split = f"up {up / cycles:.0f}, down {down / cycles:.0f}; requests per cycle {requests / cycles:g}"
        shown = f"{per_cycle:.0f} bytes ({split})"
        verdict(f"wire per unchanged poll cycle, {AGENT}", per_cycle, 1000, shown, "1000 bytes")
        print(f"  over {cycles} cycles at poll_wait {args.wire_poll_wait:g}s; {opened} connections opened meanwhile")
        print(f"baseline: an idle interpreter with the agent's imports: PSS {baseline_pss() / MB:.1f} MB")


def _client(engine: Path) -> docker.DockerClient:
    return docker.DockerClient(base_url=f"unix://{engine}", version="1.41")


def _reported(hub: RunningHub, device: str, version: str) -> bool:
    """Whether the device reported running `version` of the app (its update committed)."""
    reported = hub.call("GET", f"/devices/{device}/twin").json()["reported"]
    return bool(reported.get("apps", {}).get("bench", {}).get("version") == version)


def _running(engine: Path, app: str, version: str, owner: str) -> bool:
    client = _client(engine)
    try:
        labels = [f"io.edgefleet.app={app}", f"io.edgefleet.release={version}", f"io.edgefleet.owner={owner}"]
        return any(c.status == "running" for c in client.containers.list(filters={"label": labels}))
    finally:
        client.close()


def _wait_running(engine: Path, app: str, version: str, owner: str) -> None:
    deadline = time.monotonic() + 120
    while not _running(engine, app, version, owner):
        if time.monotonic() > deadline:
            raise SystemExit(f"{app}@{version} did not start for {owner}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Killed and reaped at once: asked to stop, it would first finish its held poll (and reconcile once more)."""
    process.kill()
    process.wait()


def _cleanup(engine: Path) -> None:
    """Both agents' containers and networks (they share the app's label)."""
    client = _client(engine)
    for container in client.containers.list(all=True, filters={"label": "io.edgefleet.app=bench"}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": "io.edgefleet.app=bench"}):
        network.remove()
    client.close()


if __name__ == "__main__":
    main()
