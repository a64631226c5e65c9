"""The demo's scenario, step by step: hub, publisher keys, two signed releases, real agents, a rollout, a bad one.

Everything runs on this machine and is started here, in a data dir of the demo's own: a
container engine (Podman's API service, or a dockerd of the demo's own: `demo.engines`), a
registry (Debian's docker-registry) holding the sample image, a hub on SQLite, three
`edgefleet agent run` processes with their own data dirs and engine namespaces, and
optionally `edgefleet sim`. The steps use the `edgefleet` commands a user would type
(reported as they run, tokens elided). At the end, whatever happened, every child is stopped
and the agents' containers, networks and volumes are removed.

The scenario writes nothing itself: it reports what happens as events (`events.py`) to the
reporter it is given, which prints plain lines or draws a live view (`terminal.py`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from edgefleet.agent.identity import saved_device_id
from edgefleet.demo.children import Children
from edgefleet.demo.engines import (
    EngineCommand,
    EngineName,
    dockerd_command,
    dockerd_start_lock,
    installed,
    podman_command,
    remove_leftovers,
)
from edgefleet.demo.errors import DemoError
from edgefleet.demo.events import AgentState, Command, Note, Reporter, RolloutProgress, StepDone, StepStarted, Wave
from edgefleet.demo.image import push_sample_image

APP = "hello"
MARKER = ".edgefleet-demo"
"""A file in the data dir saying the demo made it, so a rerun may wipe it (and nothing else)."""
DOCKER_POOL = "base=10.198.0.0/16,size=24"
"""Networks the demo's dockerd hands out (tests' own dockerds use 10.200 and up)."""
REGISTRY = "/usr/bin/docker-registry"
CLI_TIMEOUT = 300.0
START_TIMEOUT = 60.0
ROLLOUT_TIMEOUT = 420.0
ENGINE_API = "v1.41"

SERVE = "mkdir -p /tmp/www && echo {text} > /tmp/www/index.html {extra}&& exec httpd -f -p 8080 -h /tmp/www"


def manifest(version: str, image: str, *, healthy: bool) -> str:
    """The sample app: a web page served by busybox httpd; the broken release forgets its health endpoint."""
    extra = "&& echo ok > /tmp/www/healthz " if healthy else ""
    command = SERVE.format(text=f"hello from {version}", extra=extra)
    return f"""services:
  web:
    image: {image}
    command: ["/bin/sh", "-c", "{command}"]
x-edgefleet:
  app: {APP}
  version: {version}
  architectures: [amd64]
  update: {{health_window: 5s}}
  services:
    web:
      resources: {{memory: 32m, cpus: 0.25, pids: 32}}
      probes: [{{http: {{port: 8080, path: /healthz}}, timeout: 2s, retries: 2}}]
"""


@dataclass(frozen=True, slots=True)
class Options:
    data_dir: Path
    engine: EngineName = "podman"
    agents: int = 3
    simulated: int = 0
    ci: bool = False


@dataclass(slots=True)
class Result:
    """What the demo ended with: checked in `--ci` mode, printed otherwise."""

    hub_url: str = ""
    token: str = ""
    agents: dict[str, str] = field(default_factory=dict)
    """Agent name -> device ID."""
    running: dict[str, list[str]] = field(default_factory=dict)
    """Agent name -> release label of each running container of the app."""
    outcomes: dict[str, str] = field(default_factory=dict)
    """Agent name -> latest update outcome: 'STATUS FROM->TO'."""
    first: str = ""
    second: str = ""
    audit: str = ""

    def problems(self) -> list[str]:
        """What differs from the scenario's expected end (empty when it all went as it should)."""
        found = []
        for name, releases in sorted(self.running.items()):
            if releases != ["1.0.0"]:
                found.append(f"{name} runs {releases or 'nothing'}, not hello@1.0.0")
        reached = {n: o for n, o in self.outcomes.items() if "1.1.0" in o}
        if not reached:
            found.append("release 1.1.0 reached no agent")
        found += [f"{n}: 1.1.0 ended {o!r}, not rolled back" for n, o in reached.items() if "failed" not in o]
        if self.first != "completed":
            found.append(f"the first rollout is {self.first}, not completed")
        if self.second != "paused":
            found.append(f"the second rollout is {self.second}, not paused")
        if not self.audit.startswith("ok"):
            found.append(f"audit verify: {self.audit}")
        return found


class Demo:
    """One run of the scenario; `run` returns its Result and always cleans up."""

    def __init__(self, options: Options, report: Reporter) -> None:
        self.options = options
        self.report = report
        self.root = options.data_dir.resolve()
        self.children = Children(self.root / "logs")
        self.engine = Children(self.root / "logs")  # stopped last, after the agents' containers are gone
        self.engine_command: EngineCommand | None = None
        self.env: dict[str, str] = {}
        self.http: httpx.Client | None = None
        self.result = Result()
        self.run_id = secrets.token_hex(3)
        """Part of the agents' engine namespaces: two demos on one engine never share a name."""

    # --- the scenario ----------------------------------------------------------------------

    def run(self, hold: Callable[[Result], None] | None = None) -> Result:
        """Run every step; `hold` (interactive mode) is called at the end, before cleaning up."""
        self._fresh_dir()
        try:
            with self._step("Container engine"):
                socket_path = self._engine()
            with self._step("Registry"):
                registry = self._registry()
            with self._step("Hub"):
                self._hub()
            with self._step("Publisher keys and two signed releases"):
                self._publisher(registry)
            simulated = f" and {self.options.simulated} simulated devices" if self.options.simulated else ""
            with self._step(f"{self.options.agents} real agents{simulated} enroll"):
                self._agents(socket_path)
            with self._step(f"Rollout of {APP}@1.0.0 to the fleet, in waves"):
                self.result.first = self._rollout(
                    "hello-1", "1.0.0", target="fleet=demo", waves=self._waves(), until="completed", priority=0
                )
            with self._step(f"Rollout of {APP}@1.1.0 to the real agents: it fails its health check"):
                self.result.second = self._rollout(
                    "hello-2", "1.1.0", target="fleet=demo and ring=real", waves="1,100%", until="paused", priority=1
                )
            with self._step("End state: what each agent runs, the audit log"):
                self._end_state(socket_path)
            if hold is not None:
                hold(self.result)
            return self.result
        finally:
            self._clean_up()

    def _waves(self) -> str:
        return "1,34%,100%" if self.options.simulated else "1,100%"

    @contextmanager
    def _step(self, title: str) -> Iterator[None]:
        """Report a step's start and its end, failed when it raises (Ctrl-C included)."""
        self.report(StepStarted(title))
        try:
            yield
        except BaseException:
            self.report(StepDone(ok=False))
            raise
        self.report(StepDone())

    def say(self, text: str, *, detail: bool = False) -> None:
        """Report a line of news (`detail`: indented under the line before it when printed plainly)."""
        self.report(Note(text, detail=detail))

    # --- steps ------------------------------------------------------------------------------

    def _fresh_dir(self) -> None:
        if self.root.exists() and any(self.root.iterdir()):
            if not (self.root / MARKER).exists():
                raise DemoError(f"{self.root} is not empty and not a demo's data dir: choose another --data-dir")
            shutil.rmtree(self.root)
        (self.root / "logs").mkdir(parents=True)
        (self.root / MARKER).write_text("made by `edgefleet demo`; removed by the next run\n")

    def _engine(self) -> Path:
        """Start the chosen engine; its API socket."""
        if self.options.engine not in installed():
            raise DemoError(f"{self.options.engine} is missing: run scripts/setup first")
        if self.options.engine == "podman":
            command = podman_command(self.root)
            self.say("Starting a Podman API service (the container engine the agents use)")
        else:
            exec_root = Path(tempfile.mkdtemp(prefix="efdemo-", dir="/tmp"))  # short: sockets inside
            command = dockerd_command(self.root, exec_root=exec_root, address_pool=DOCKER_POOL)
            self.say("Starting a Docker Engine of the demo's own (the container engine the agents use)")
        self.engine_command = command

        def answers() -> bool:
            if not command.socket.exists():
                return False
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(command.socket)), timeout=2) as client:
                    return client.get("http://engine/_ping").status_code == 200
            except httpx.HTTPError:
                return False

        what = "Podman's API" if command.name == "podman" else "Docker Engine's API"
        if command.name == "docker":
            with dockerd_start_lock():
                child = self.engine.start(command.name, command.argv)
                self.engine.wait_until(child, answers, what=what, timeout=START_TIMEOUT)
        else:
            child = self.engine.start(command.name, command.argv)
            self.engine.wait_until(child, answers, what=what, timeout=START_TIMEOUT)
        return command.socket

    def _registry(self) -> str:
        if not Path(REGISTRY).exists():
            raise DemoError("docker-registry is missing: run scripts/setup first")
        port = _free_port()
        config = self.root / "registry.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "warn", "accesslog": {"disabled": True}},
                    "storage": {"filesystem": {"rootdirectory": str(self.root / "registry")}},
                    "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
                }
            )
        )
        self.say(f"Starting a local OCI registry on 127.0.0.1:{port} (release builds read images from it)")
        child = self.children.start("registry", [REGISTRY, "serve", str(config)])

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self.children.wait_until(child, answers, what="the registry", timeout=START_TIMEOUT)
        return f"127.0.0.1:{port}"

    def _hub(self) -> None:
        data = self.root / "hub"
        init = self.cli("hub", "init", "--data-dir", str(data), show="edgefleet hub init --data-dir DIR/hub")
        token = next((ln.split()[-1] for ln in init.splitlines() if ln.startswith("admin token:")), "")
        if not token:
            raise DemoError("`hub init` printed no admin token")
        port = _free_port()
        url = f"https://127.0.0.1:{port}"
        self.report(Command(f"edgefleet hub serve --data-dir DIR/hub --bind 127.0.0.1:{port}"))
        child = self.children.start(
            "hub",
            [sys.executable, "-m", "edgefleet.cli.main", "hub", "serve", "--data-dir", str(data), "--bind", url[8:]],
            env={"EDGEFLEET_ROLLOUT_INTERVAL_SECONDS": "1", "EDGEFLEET_LONG_POLL_MAX_SECONDS": "10"},
        )
        self.http = httpx.Client(
            base_url=url,
            verify=ssl.create_default_context(cafile=str(data / "ca.crt")),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

        def answers() -> bool:
            try:
                return self._api().get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        self.children.wait_until(child, answers, what="the hub", timeout=START_TIMEOUT)
        self.env = {"EDGEFLEET_HUB": url, "EDGEFLEET_CA": str(data / "ca.crt"), "EDGEFLEET_TOKEN": token}
        self.result.hub_url, self.result.token = url, token

    def _publisher(self, registry: str) -> None:
        keys = self.root / "publisher-keys"
        self.cli("keys", "init", "--dir", str(keys), show="edgefleet keys init --dir DIR/publisher-keys")
        self.cli("repo", "init", "--keys", str(keys), show="edgefleet repo init --keys DIR/publisher-keys")
        self.say("Building the sample image from this machine's busybox and pushing it to the registry")
        image = push_sample_image(registry)
        for version, healthy in (("1.0.0", True), ("1.1.0", False)):
            source = self.root / f"app-{version}"
            source.mkdir()
            (source / "compose.yaml").write_text(manifest(version, image, healthy=healthy))
            self.cli(
                *("release", "publish", str(source), "--keys", str(keys), "--bundle", "--insecure-registry", registry),
                show=f"edgefleet release publish DIR/app-{version} --keys DIR/publisher-keys --bundle"
                + ("" if healthy else "   # 1.1.0 forgot its health endpoint"),
            )

    def _agents(self, socket_path: Path) -> None:
        policy = self.root / "policy.toml"
        policy.write_text("allow = []\n")
        token = self._token("ring=real", self.options.agents)
        for index in range(1, self.options.agents + 1):
            name = f"demo{index}"
            config = self.root / f"{name}.toml"
            config.write_text(
                f'hub_url = "{self.env["EDGEFLEET_HUB"]}"\nca = "{self.env["EDGEFLEET_CA"]}"\n'
                f'enrollment_token = "{token}"\ndata_dir = "{self.root / name}"\nengine = "unix://{socket_path}"\n'
                f'policy = "{policy}"\narch = "amd64"\npoll_wait = 10\nengine_namespace = "{name}{self.run_id}"\n'
                f'repository_root = "{self.root / "publisher-keys" / "repository" / "root.json"}"\n'
            )
            on = "Podman" if self.options.engine == "podman" else "Docker"
            self.report(Command(f"edgefleet agent run --config DIR/{name}.toml   # a real agent on {on}"))
            self.children.start(
                name, [sys.executable, "-m", "edgefleet.cli.main", "agent", "run", "--config", str(config)]
            )
        if self.options.simulated:
            sim_token = self._token("ring=sim", self.options.simulated)
            n = self.options.simulated
            self.report(
                Command(
                    f"edgefleet sim --devices {n} --fail-rate 0 --offline 0   # simulated devices, for a bigger picture"
                )
            )
            self.children.start(
                "sim",
                [
                    *(sys.executable, "-m", "edgefleet.cli.main", "sim", "--devices", str(n)),
                    *("--hub", self.env["EDGEFLEET_HUB"], "--ca", self.env["EDGEFLEET_CA"], "--token", sim_token),
                    *("--fail-rate", "0", "--offline", "0", "--poll-wait", "10", "--report-interval", "10"),
                    *("--download-time", "1", "--start-time", "1", "--state-dir", str(self.root / "sim")),
                ],
            )
        expected = self.options.agents + self.options.simulated
        deadline = time.monotonic() + START_TIMEOUT + expected * 0.2
        while True:
            devices = self._accepted()
            if len(devices) >= expected:
                break
            if time.monotonic() > deadline:
                raise DemoError(f"{len(devices)} of {expected} devices enrolled in time (logs: {self.root / 'logs'})")
            time.sleep(1)
        real = {d["id"] for d in devices if d.get("tags", {}).get("ring") == "real"}
        self.say(f"{len(devices)} devices enrolled and accepted ({len(real)} real agents)")
        for name in (f"demo{i}" for i in range(1, self.options.agents + 1)):
            self.result.agents[name] = saved_device_id(self.root / name) or f"({name} has no identity)"
        unknown = set(self.result.agents.values()) - real
        if unknown:
            raise DemoError(f"agents enrolled under IDs the hub does not list: {sorted(unknown)}")

    def _rollout(self, name: str, version: str, *, target: str, waves: str, until: str, priority: int) -> str:
        self.cli(
            *("deploy", "create", "--release", f"{APP}@{version}", "--name", name, "--target", target),
            *("--waves", waves, "--max-failure", "0%", "--priority", str(priority)),
        )
        deadline = time.monotonic() + ROLLOUT_TIMEOUT
        while True:
            status = self._get(f"/api/v1/deployments/{name}")
            deployment = status["deployment"]
            self.report(_progress(name, status))
            for agent in self._agent_states():
                self.report(agent)
            if deployment["state"] in (until, "aborted", "rolled-back") or (
                deployment["state"] == "completed" and until != "completed"
            ):
                if deployment.get("reason"):
                    self.say(f"{name}: {deployment['state']}: {deployment['reason']}", detail=True)
                return str(deployment["state"])
            if time.monotonic() > deadline:
                return f"still {deployment['state']} after {ROLLOUT_TIMEOUT:.0f} s"
            time.sleep(1)

    def _end_state(self, socket_path: Path) -> None:
        """What each agent runs (asked of the engine) and its last outcome (asked of the hub); the audit check."""
        time.sleep(2)  # the canary's containers settle after its rollback
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=30) as engine:
            for name, device_id in self.result.agents.items():
                found = engine.get(
                    f"http://engine/{ENGINE_API}/containers/json",
                    params={"filters": json.dumps({"label": [f"io.edgefleet.owner={device_id}"]})},
                ).json()
                self.result.running[name] = sorted(c["Labels"].get("io.edgefleet.release", "?") for c in found)
        for agent in self._agent_states():
            if agent.outcome:
                self.result.outcomes[agent.name] = agent.outcome
        verified = self._run("audit", "verify")
        self.result.audit = "ok: " + verified.stdout.strip()[:200] if verified.returncode == 0 else verified.stderr
        for name in sorted(self.result.agents):
            runs = ", ".join(self.result.running.get(name, [])) or "nothing"
            self.say(f"{name}: runs {APP}@{runs}; last update: {self.result.outcomes.get(name, '-')}", detail=True)

    def _clean_up(self) -> None:
        with self._step("Stopping everything the demo started"):
            self.children.stop_all()
            if self.http is not None:
                self.http.close()
            command = self.engine_command
            if command is not None and command.socket.exists() and self.result.agents:
                try:
                    _remove_owned(command.socket, list(self.result.agents.values()))
                except (httpx.HTTPError, ValueError) as exc:
                    self.say(f"could not remove the agents' containers: {exc}")
            self.engine.stop_all()
            if command is not None:
                remove_leftovers(command)

    # --- helpers ----------------------------------------------------------------------------

    def _api(self) -> httpx.Client:
        if self.http is None:
            raise DemoError("the hub is not started")
        return self.http

    def _get(self, path: str, **kwargs: Any) -> Any:
        response = self._api().get(path, **kwargs)
        if response.status_code != 200:
            raise DemoError(f"GET {path}: {response.status_code} {response.text[:200]}")
        return response.json()

    def _agent_states(self) -> list[AgentState]:
        """What each real agent runs and its last outcome, as the hub knows them (for the view; errors skip one)."""
        found = []
        for name, device_id in sorted(self.result.agents.items()):
            try:
                response = self._api().get(f"/api/v1/devices/{quote(device_id, safe='')}/state")
            except httpx.HTTPError:
                continue
            if response.status_code != 200:
                continue
            state = response.json()
            running = next((a.get("reported") for a in state.get("apps") or [] if a.get("app") == APP), None)
            outcome = _outcome((state.get("updates") or {}).get(APP))
            found.append(AgentState(name, f"{APP}@{running}" if running else None, outcome or None))
        return found

    def _accepted(self) -> list[dict[str, Any]]:
        """Every accepted device of the demo's fleet, page by page."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"status": "accepted", "fleet": "demo", "limit": 1000}
        while True:
            page = self._get("/api/v1/devices", params=params)
            found += page["items"]
            if not page.get("next_after"):
                return found
            params["after"] = page["next_after"]

    def _token(self, tag: str, uses: int) -> str:
        out = self.cli("token", "create", "--fleet", "demo", "--tag", tag, "--uses", str(uses), "--json", quiet=True)
        return str(json.loads(out)["token"])

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 (our own CLI, with arguments the demo made)
            [sys.executable, "-m", "edgefleet.cli.main", *args],
            capture_output=True,
            text=True,
            env={**_environ(), **self.env},
            timeout=CLI_TIMEOUT,
            check=False,
        )

    def cli(self, *args: str, show: str | None = None, quiet: bool = False) -> str:
        """Run an `edgefleet` command as a user would; its stdout, or a DemoError with its message."""
        if not quiet:
            self.report(Command(show or " ".join(("edgefleet", *args))))
        done = self._run(*args)
        if done.returncode != 0:
            raise DemoError(f"`edgefleet {' '.join(args[:3])}` failed: {done.stderr.strip()[-600:]}")
        return done.stdout


def _progress(name: str, status: dict[str, Any]) -> RolloutProgress:
    """A deployment's status (`GET /deployments/NAME`, as `deploy status` shows it) as the view's event."""
    deployment = status["deployment"]
    counts = ("downloading", "failed", "offline", "restored")
    return RolloutProgress(
        name=name,
        state=str(deployment["state"]),
        wave=int(deployment["wave"]),
        waves=tuple(
            Wave(
                wave=int(w["wave"]),
                size=int(w["size"]),
                updated=int(w["updated"]),
                **{k: int(w.get(k) or 0) for k in counts},
            )
            for w in status["waves"]
        ),
        reason=deployment.get("reason") or None,
    )


def _outcome(update: dict[str, Any] | None) -> str:
    """An update outcome as 'STATUS FROM->TO' ('' for none)."""
    if not update:
        return ""
    return f"{update.get('status')} {update.get('from_release') or 'nothing'}->{update.get('to_release')}"


def _remove_owned(socket_path: Path, owners: list[str]) -> None:
    """Remove the containers, networks and volumes the demo's agents made (by their owner labels)."""
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=60) as engine:
        base = f"http://engine/{ENGINE_API}"
        for owner in owners:
            label = json.dumps({"label": [f"io.edgefleet.owner={owner}"]})
            for container in engine.get(f"{base}/containers/json", params={"all": "true", "filters": label}).json():
                engine.delete(f"{base}/containers/{container['Id']}", params={"force": "true", "v": "true"})
            for network in engine.get(f"{base}/networks", params={"filters": label}).json():
                engine.delete(f"{base}/networks/{network['Id']}")
            volumes = engine.get(f"{base}/volumes", params={"filters": label}).json().get("Volumes") or []
            for volume in volumes:
                engine.delete(f"{base}/volumes/{volume['Name']}", params={"force": "true"})


def _environ() -> dict[str, str]:
    """The environment without EDGEFLEET_* settings, which would change the hub and agents the demo starts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
