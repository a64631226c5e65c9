"""What the engine must create for each service: a hardened container definition, from manifest + grants.

Pure: a verified `Release`, the permissions the device's policy granted, and facts about
the host (which device nodes exist) in; frozen `ContainerSpec`s out. Every container gets
the same confinement (docs/publisher-guide.md, "Permissions reference"; notes/container-hardening.md):
all capabilities dropped, no-new-privileges, read-only root with small tmpfs mounts, memory /
CPU / pids limits, an init process, bounded logs and restarts, private namespaces, ports
bound to the address the manifest names. Each permission adds exactly its engine settings.

`config_digest` hashes everything that shapes the container except the release version,
so a new release recreates only the services whose definition changed.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from edgefleet.agent.plan import ServiceTarget
from edgefleet.manifest import Permission, Port, Release, Service
from edgefleet.manifest import Probe as ManifestProbe

HARDENING_VERSION = 1
"""Bumped whenever the fixed confinement below changes, so existing containers are recreated."""
TMPFS = (("/tmp", "size=64m,mode=1777"), ("/run", "size=16m,mode=755"))  # noqa: S108  # container paths
LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = 3
DEFAULT_RESTARTS = 5
NOFILE = 4096
LABEL_PREFIX = "io.edgefleet."
LOW_PORT = 1024


@dataclass(frozen=True, slots=True)
class HostFacts:
    """Device nodes present on this host that permissions may map to, and its paths never shared."""

    video_devices: tuple[str, ...] = ()
    gpio_devices: tuple[str, ...] = ()
    protected_paths: tuple[str, ...] = ()
    """The agent's own state, configuration and policy, and the engine's socket (`agent.hostpaths`)."""


@dataclass(frozen=True, slots=True)
class Mount:
    kind: Literal["volume", "bind"]
    source: str
    """Volume name (app-scoped by the engine adapter) or host path."""
    target: str
    read_only: bool


@dataclass(frozen=True, slots=True)
class Health:
    test: tuple[str, ...]
    interval: float
    timeout: float
    retries: int
    start_period: float


@dataclass(frozen=True, slots=True)
class Probe:
    """An x-edgefleet probe the agent runs while it watches a new release (not part of the container)."""

    kind: Literal["http", "tcp", "exec"]
    port: int = 0
    path: str = "/"
    argv: tuple[str, ...] = ()
    timeout: float = 2.0
    retries: int = 3
    start_period: float = 0.0

    def describe(self) -> str:
        if self.kind == "http":
            return f"http probe :{self.port}{self.path}"
        if self.kind == "tcp":
            return f"tcp probe :{self.port}"
        return "exec probe " + shlex.join(self.argv)[:200]


def _probe(probe: ManifestProbe) -> Probe:
    timing = (probe.timeout, probe.retries, probe.start_period)
    if probe.http is not None:
        return Probe("http", probe.http.port, probe.http.path, (), *timing)
    if probe.tcp is not None:
        return Probe("tcp", probe.tcp.port, "/", (), *timing)
    return Probe("exec", 0, "/", tuple(probe.exec or ()), *timing)


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One container as the agent will create it."""

    app: str
    service: str
    release: str
    image: str
    command: tuple[str, ...] | None
    entrypoint: tuple[str, ...] | None
    environment: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    egress: bool
    """Also attached to the app's egress network (outbound access, published ports)."""
    ports: tuple[Port, ...]
    mounts: tuple[Mount, ...]
    devices: tuple[str, ...]
    device_cgroup_rules: tuple[str, ...]
    cap_add: tuple[str, ...]
    memory: int
    nano_cpus: int
    pids: int
    restart_max: int
    """0: never restarted by the engine."""
    health: Health | None
    depends_on: tuple[str, ...]
    probes: tuple[Probe, ...] = ()
    """Judge the service during a health window; they do not shape the container, so not in its digest."""
    config_digest: str = field(default="", compare=False)

    def target(self) -> ServiceTarget:
        """What the planner needs to know of this container."""
        return ServiceTarget(self.app, self.service, self.release, self.image, self.config_digest, self.depends_on)


def _argv(value: str | list[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(shlex.split(value)) if isinstance(value, str) else tuple(value)


def _restarts(policy: str) -> int:
    if policy == "no":
        return 0
    _, _, count = policy.partition(":")
    return int(count) if count else DEFAULT_RESTARTS


INTERFACE_BINDS = {
    "raw-usb": Mount("bind", "/dev/bus/usb", "/dev/bus/usb", read_only=False),
    "hardware-observe": Mount("bind", "/sys/class/thermal", "/sys/class/thermal", read_only=True),
    "removable-media": Mount("bind", "/media", "/media", read_only=False),
    "log-observe": Mount("bind", "/var/log", "/var/log", read_only=True),
}
"""The fixed host binds of named permissions; every other bind is a `host-read`/`host-write` path."""


def _grants(permissions: tuple[Permission, ...], facts: HostFacts) -> tuple[list[Mount], list[str], list[str]]:
    """(binds, devices, device cgroup rules) for the granted permissions."""
    binds: list[Mount] = []
    devices: list[str] = []
    rules: list[str] = []
    for permission in permissions:
        kind, arg = permission.kind, permission.arg
        if kind == "serial-port" and arg:
            devices.append(f"{arg}:{arg}:rwm")
        elif kind == "camera":
            devices.extend(f"{d}:{d}:rwm" for d in facts.video_devices)
        elif kind == "gpio":
            devices.extend(f"{d}:{d}:rwm" for d in facts.gpio_devices)
        elif kind == "i2c" and arg is not None:
            devices.append(f"/dev/i2c-{arg}:/dev/i2c-{arg}:rwm")
        elif kind in INTERFACE_BINDS:
            binds.append(INTERFACE_BINDS[kind])
            if kind == "raw-usb":
                rules.append("c 189:* rwm")
        elif kind in ("host-read", "host-write") and arg:
            binds.append(Mount("bind", arg, arg, read_only=kind == "host-read"))
    return binds, devices, rules


def digest(spec: ContainerSpec) -> str:
    """SHA-256 of everything that shapes the container, except the release version."""
    shape = asdict(spec)
    shape.pop("release")
    shape.pop("config_digest")
    shape.pop("probes")
    shape["hardening"] = HARDENING_VERSION
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()


def service_spec(
    release: Release,
    service: Service,
    *,
    facts: HostFacts,
    environment: dict[str, str] | None = None,
) -> ContainerSpec:
    """The container for one service of a release whose permissions the policy granted.

    Args:
        release: the verified release.
        service: one of its services.
        facts: device nodes present on this host.
        environment: operator-set values (fleet, then device); each replaces the value of a
            variable the manifest declares, and names it does not declare are ignored.
    """
    compose, policy = service.compose, service.policy
    binds, devices, rules = _grants(policy.permissions, facts)
    kinds = {p.kind for p in policy.permissions}
    mounts = [Mount("volume", v.source, v.target, v.read_only) for v in compose.volumes]
    low_ports = any(port.target < LOW_PORT for port in compose.ports)
    health = compose.healthcheck
    spec = ContainerSpec(
        app=release.app,
        service=service.name,
        release=release.version,
        image=compose.image,
        command=_argv(compose.command),
        entrypoint=_argv(compose.entrypoint),
        # Operators may set values only for variables the publisher's manifest declares: a name it
        # does not mention (LD_PRELOAD, BASH_ENV, ...) would let the hub run code nobody signed.
        environment=tuple(
            sorted(
                {
                    **compose.environment,
                    **{k: v for k, v in (environment or {}).items() if k in compose.environment},
                }.items()
            )
        ),
        labels=tuple(sorted((k, v) for k, v in compose.labels.items() if not k.startswith(LABEL_PREFIX))),
        egress="network" in kinds or bool(compose.ports),
        ports=tuple(compose.ports),
        mounts=tuple(mounts + binds),
        devices=tuple(sorted(set(devices))),
        device_cgroup_rules=tuple(sorted(set(rules))),
        cap_add=("NET_BIND_SERVICE",) if low_ports else (),
        memory=policy.resources.memory,
        nano_cpus=int(policy.resources.cpus * 1e9),
        pids=policy.resources.pids,
        restart_max=_restarts(compose.restart),
        health=None
        if health is None or health.disable or health.test == ["NONE"]  # Compose's two ways to turn it off
        else Health(
            test=tuple(health.test) if isinstance(health.test, list) else ("CMD-SHELL", health.test),
            interval=health.interval,
            timeout=health.timeout,
            retries=health.retries,
            start_period=health.start_period,
        ),
        depends_on=tuple(sorted(compose.depends_on)),
        probes=tuple(_probe(p) for p in policy.probes),
    )
    return replace(spec, config_digest=digest(spec))


def release_specs(
    release: Release, *, facts: HostFacts, environment: dict[str, str] | None = None
) -> tuple[ContainerSpec, ...]:
    """Every service's container, in manifest order."""
    return tuple(service_spec(release, s, facts=facts, environment=environment) for s in release.services)
