"""Release manifests: the Compose subset a device runs plus `x-edgefleet`, parsed strictly into a `Release`.

Text in, `Release` out or `ManifestError` listing every problem as ``FILE: key.path: what``.
Unknown keys are errors. Compose keys that would undo confinement are refused with a
pointer to the permission that expresses the need (see docs/publisher-guide.md, "Manifest reference").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from edgefleet.errors import EdgefleetError
from edgefleet.protocol import IMAGE_BY_DIGEST_PATTERN, AppName, Arch

MAX_MANIFEST_BYTES = 256 * 1024
MAX_YAML_DEPTH = 32

# SemVer 2.0.0, from semver.org.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
IMAGE_BY_DIGEST = re.compile(IMAGE_BY_DIGEST_PATTERN)
SENSITIVE_HOST_PATHS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/sbin",
    "/sys",
    "/usr",
    "/var/spool/cron",
)
"""The host's programs, libraries, boot files, configuration, kernel interfaces, root's home and crontabs:
never shared, nor anything below or above them (writing there, or reading the secrets there, is a way out
of the container)."""
ENGINE_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/podman/podman.sock",
    "/var/run/balena-engine.sock",
    "/run/containerd/containerd.sock",
)
PROTECTED_HOST_PATHS = (
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containers",
    "/var/lib/containerd",
    "/var/lib/balena-engine",
    "/var/lib/edgefleet",
    "/etc/edgefleet",
)
"""Engine sockets and state, and the agent's own state: never shared, nor anything below or above them
(the device's agent adds its own data dir, configuration, engine socket and engine data root)."""
MAX_HOST_PATH = 1024
SERIAL_PORT = re.compile(r"^/dev/(tty(USB|ACM|S|AMA|mxc|O)[0-9]{1,3}|serial[0-9]{1,2}|rfcomm[0-9]{1,2})$")

FORBIDDEN_KEYS: dict[str, str] = {
    "privileged": "privileged mode is never granted; ask for the specific permission "
    "(e.g. 'serial-port:/dev/ttyUSB0', 'gpio:17', 'camera')",
    "network_mode": "apps run on their own network; publish ports with 'ports' and the 'network-bind:PORT' permission",
    "pid": "host namespaces are never shared; 'hardware-observe' grants read access to host facts",
    "ipc": "host namespaces are never shared",
    "uts": "host namespaces are never shared",
    "userns_mode": "host namespaces are never shared",
    "cap_add": "capabilities come from permissions (e.g. 'network-bind:80' for a low port, 'raw-usb')",
    "cap_drop": "all capabilities are always dropped",
    "devices": "devices come from permissions: 'serial-port:PATH', 'camera', 'gpio:N', 'i2c:BUS', 'raw-usb'",
    "device_cgroup_rules": "devices come from permissions: 'serial-port:PATH', 'camera', 'gpio:N', 'i2c:BUS'",
    "security_opt": "confinement (no-new-privileges, seccomp) is fixed; permissions grant what an app needs",
    "sysctls": "kernel settings are not changed by apps",
    "volumes_from": "share data through a named volume",
    "cgroup_parent": "resources come from x-edgefleet.services.<name>.resources",
    "networks": "each app has one network of its own; services reach each other by name",
    "network": "each app has one network of its own",
    "build": "devices do not build images: run `edgefleet release build`, which pins images by digest",
    "read_only": "the root filesystem is always read-only; write to a named volume or /tmp",
    "user": "not supported yet",
    "mem_limit": "set x-edgefleet.services.<name>.resources.memory",
    "cpus": "set x-edgefleet.services.<name>.resources.cpus",
    "pids_limit": "set x-edgefleet.services.<name>.resources.pids",
    "deploy": "resources come from x-edgefleet.services.<name>.resources",
}


class ManifestError(EdgefleetError):
    """The manifest is not acceptable; `problems` lists every (key path, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {path}: {message}" for path, message in problems))


# --- small value parsers -------------------------------------------------------------

_SIZE = re.compile(r"^(\d+)\s*([bkmg]?)b?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_size(value: object) -> int:
    """'64m', '1g', '512k' or a byte count -> bytes."""
    if isinstance(value, bool):
        raise ValueError("must be a size like 64m or 1g")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value).strip())
    if not match:
        raise ValueError("must be a size like 64m or 1g")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_duration(value: object) -> float:
    """Compose durations ('1m30s', '10s', '500ms') or seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 10s or 1m30s")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match or not any(match.groups()):
        raise ValueError("must be a duration like 10s or 1m30s")
    hours, minutes, seconds, millis = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def canonical_path(path: str) -> str:
    """The one spelling of an absolute path: no empty ('//'), '.' or trailing segments; '..' refused.

    Every allow/deny decision on a host path works on this form: the kernel reads ``//etc``,
    ``/./etc`` and ``/etc/`` as ``/etc``, and so must every check (symlinks are the agent's
    to resolve, on the device: `agent.hostpaths`).

    Raises:
        ValueError: not absolute, too long, or containing '..', NUL or another control character.
    """
    if not path.startswith("/"):
        raise ValueError("must be an absolute path")
    if len(path) > MAX_HOST_PATH:
        raise ValueError(f"must be at most {MAX_HOST_PATH} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        raise ValueError("must not contain control characters")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("must not contain '..'")
    return "/" + "/".join(parts)


def _within(path: str, base: str) -> bool:
    """`path` is `base` or below it (both canonical)."""
    return path == base or path.startswith(base.rstrip("/") + "/")


def host_path_problem(path: str, *, protected: tuple[str, ...] = ()) -> str | None:
    """Why a canonical host path may not be shared with a container (None: it may).

    Args:
        path: a path from `canonical_path` (or, on the device, its symlinks resolved too).
        protected: more paths never shared, nor anything below or above them (a device's own
            agent state, configuration, engine socket and data root); canonical.
    """
    if path == "/":
        return "/ is the whole host, a sensitive host path, and cannot be shared"
    if path in ENGINE_SOCKETS:
        return "the container engine's socket is never shared"
    for sensitive in SENSITIVE_HOST_PATHS:
        if _within(path, sensitive) or _within(sensitive, path):
            return f"{path} is or holds a sensitive host path ({sensitive}) and cannot be shared"
    for kept in (*PROTECTED_HOST_PATHS, *ENGINE_SOCKETS, *protected):
        if _within(path, kept) or _within(kept, path):
            return f"{path} is or holds the container engine's or edgefleet's state ({kept}) and cannot be shared"
    return None


# --- permissions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Permission:
    """One named grant (modelled on snap interfaces): `kind` plus its argument, if any."""

    kind: str
    arg: str | None = None

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"


PLAIN_PERMISSIONS = ("network", "camera", "raw-usb", "hardware-observe", "removable-media", "log-observe")


def parse_permission(text: str) -> Permission:
    """Parse and check one permission string.

    Raises:
        ValueError: unknown permission or a bad argument.
    """
    kind, sep, arg = text.partition(":")
    if not sep:
        if kind in PLAIN_PERMISSIONS:
            return Permission(kind)
        raise ValueError(f"unknown permission {text!r}")
    if kind == "network-bind":
        if not arg.isdigit() or not 1 <= int(arg) <= 65535:
            raise ValueError("network-bind needs a port 1..65535")
        return Permission(kind, str(int(arg)))
    if kind == "serial-port":
        path = canonical_path(arg)
        if not SERIAL_PORT.fullmatch(path):
            raise ValueError("serial-port needs a serial device such as /dev/ttyUSB0, /dev/ttyACM0 or /dev/ttyS1")
        return Permission(kind, path)
    if kind in ("gpio", "i2c"):
        limit = 1023 if kind == "gpio" else 255
        if not arg.isdigit() or int(arg) > limit:
            raise ValueError(f"{kind} needs a number 0..{limit}")
        return Permission(kind, str(int(arg)))
    if kind in ("host-read", "host-write"):
        path = canonical_path(arg)
        problem = host_path_problem(path)
        if problem is not None:
            raise ValueError(problem)
        return Permission(kind, path)
    raise ValueError(f"unknown permission {text!r}")


# --- raw Compose models (the file's own shape, so error paths match the file) -----------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$")]
StrOrList = str | list[str]


class Healthcheck(_Strict):
    """Compose healthcheck, durations in seconds."""

    test: Annotated[list[str], Field(min_length=1)] | str
    interval: float = 30.0
    timeout: float = 30.0
    retries: Annotated[int, Field(ge=1, le=100)] = 3
    start_period: float = 0.0
    disable: bool = False

    @field_validator("interval", "timeout", "start_period", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        seconds = parse_duration(value)
        if not 0 <= seconds <= 3600:
            raise ValueError("must be between 0s and 1h")
        return seconds


@dataclass(frozen=True, slots=True)
class Port:
    """A published port; `host_ip` is always explicit (never an implicit 0.0.0.0)."""

    host_ip: str
    published: int
    target: int
    protocol: Literal["tcp", "udp"]


_PORT = re.compile(
    r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(?:(?P<pub>\d{1,5}):)?"
    r"(?P<target>\d{1,5})(?:/(?P<proto>tcp|udp))?$"
)


def _parse_port(value: object) -> Port:
    if isinstance(value, dict):
        unknown = set(value) - {"target", "published", "host_ip", "protocol"}
        if unknown:
            raise ValueError(f"unknown port keys: {', '.join(sorted(map(str, unknown)))}")
        target, published = value.get("target"), value.get("published", value.get("target"))
        host_ip, protocol = value.get("host_ip", "127.0.0.1"), value.get("protocol", "tcp")
    elif isinstance(value, str | int) and not isinstance(value, bool):
        match = _PORT.match(str(value))
        if not match:
            raise ValueError("must be [HOST_IP:][PUBLISHED:]TARGET[/tcp|udp]")
        target, published = match.group("target"), match.group("pub") or match.group("target")
        host_ip, protocol = (match.group("ip") or "127.0.0.1").strip("[]"), match.group("proto") or "tcp"
    else:
        raise ValueError("must be a port string or mapping")
    try:
        port = Port(host_ip=str(host_ip), published=int(str(published)), target=int(str(target)), protocol=protocol)
    except (TypeError, ValueError) as exc:
        raise ValueError("ports must be numbers") from exc
    if not (1 <= port.published <= 65535 and 1 <= port.target <= 65535) or protocol not in ("tcp", "udp"):
        raise ValueError("ports are 1..65535, protocol tcp or udp")
    try:
        ipaddress.ip_address(port.host_ip)
    except ValueError as exc:
        raise ValueError(f"host_ip {port.host_ip!r} is not an IP address") from exc
    return port


@dataclass(frozen=True, slots=True)
class VolumeMount:
    """A named volume mounted into a service (host paths come only from permissions)."""

    source: str
    target: str
    read_only: bool


_VOLUME_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")


def _parse_volume(value: object) -> VolumeMount:
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise ValueError("must be VOLUME:/path[:ro|rw]")
        source, target, read_only = parts[0], parts[1], len(parts) == 3 and parts[2] == "ro"
    elif isinstance(value, dict):
        unknown = set(value) - {"type", "source", "target", "read_only"}
        if unknown:
            raise ValueError(f"unknown volume keys: {', '.join(sorted(map(str, unknown)))}")
        if value.get("type", "volume") != "volume":
            raise ValueError(
                "only named volumes are allowed: host paths come from the 'host-read:PATH' or "
                "'host-write:PATH' permission"
            )
        source, target, read_only = (
            str(value.get("source", "")),
            str(value.get("target", "")),
            bool(value.get("read_only", False)),
        )
    else:
        raise ValueError("must be VOLUME:/path or a mapping")
    if source in ENGINE_SOCKETS or target in ENGINE_SOCKETS:
        raise ValueError("the container engine's socket is never mounted")
    if not _VOLUME_NAME.match(source):
        raise ValueError(
            f"{source!r} is not a named volume: host paths come from the 'host-read:PATH' or "
            "'host-write:PATH' permission"
        )
    return VolumeMount(source=source, target=canonical_path(target), read_only=read_only)


def _string_map(value: object, what: str) -> dict[str, str]:
    if isinstance(value, list):
        pairs = {}
        for item in value:
            key, _, text = str(item).partition("=")
            pairs[key] = text
        value = pairs
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a mapping or a list of KEY=VALUE")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$", key):
            raise ValueError(f"bad {what} name {key!r}")
        if isinstance(item, dict | list):
            raise ValueError(f"{what} {key} must be a scalar")
        out[key] = "" if item is None else str(item).lower() if isinstance(item, bool) else str(item)
    return out


class ComposeService(_Strict):
    """One service as written in the Compose file."""

    image: str
    command: StrOrList | None = None
    entrypoint: StrOrList | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    ports: list[Port] = Field(default_factory=list, max_length=64)
    volumes: list[VolumeMount] = Field(default_factory=list, max_length=64)
    healthcheck: Healthcheck | None = None
    restart: str = "on-failure"
    labels: dict[str, str] = Field(default_factory=dict)
    depends_on: dict[str, Literal["service_started", "service_healthy"]] = Field(default_factory=dict)

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if not IMAGE_BY_DIGEST.match(value):
            raise ValueError("must be pinned by digest (image@sha256:...)")
        return value

    @field_validator("environment", "labels", mode="before")
    @classmethod
    def _maps(cls, value: object) -> dict[str, str]:
        return _string_map(value, "variable")

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: object) -> list[Port]:
        if not isinstance(value, list):
            raise ValueError("must be a list")
        return [_parse_port(item) for item in value]

    @field_validator("volumes", mode="before")
    @classmethod
    def _volumes(cls, value: object) -> list[VolumeMount]:
        if not isinstance(value, list):
            raise ValueError("must be a list")
        return [_parse_volume(item) for item in value]

    @field_validator("restart")
    @classmethod
    def _restart(cls, value: str) -> str:
        if not re.match(r"^(no|always|unless-stopped|on-failure(:([1-9]\d?|100))?)$", value):
            raise ValueError("must be no, always, unless-stopped or on-failure[:N] (N <= 100)")
        return value

    @field_validator("depends_on", mode="before")
    @classmethod
    def _depends(cls, value: object) -> dict[str, str]:
        if isinstance(value, list):
            return dict.fromkeys(map(str, value), "service_started")
        if isinstance(value, dict):
            return {
                str(k): (v or {}).get("condition", "service_started") if isinstance(v, dict | None) else v
                for k, v in value.items()
            }
        raise ValueError("must be a list of service names or a mapping")


class Resources(_Strict):
    """Limits every service must state: memory (bytes), cpus, pids."""

    memory: int
    cpus: Annotated[float, Field(gt=0, le=64)]
    pids: Annotated[int, Field(ge=1, le=32768)]

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: object) -> int:
        size = parse_size(value)
        if not 4 * 1024**2 <= size <= 64 * 1024**3:
            raise ValueError("must be between 4m and 64g")
        return size


class HttpProbe(_Strict):
    """GET http://SERVICE:port/path from the agent; any 2xx or 3xx answer passes."""

    port: Annotated[int, Field(ge=1, le=65535)]
    path: Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?\-]{0,255}$")] = "/"


class TcpProbe(_Strict):
    """A TCP connection to SERVICE:port from the agent passes."""

    port: Annotated[int, Field(ge=1, le=65535)]


class Probe(_Strict):
    """One x-edgefleet health probe: exactly one of http, tcp or exec, and how to judge it.

    Run by the agent during a new release's health window only, like a Compose
    healthcheck: healthy once it passes, unhealthy after `retries` failures in a row
    (failures during `start_period` do not count).
    """

    http: HttpProbe | None = None
    tcp: TcpProbe | None = None
    exec: (
        Annotated[list[Annotated[str, StringConstraints(max_length=1024)]], Field(min_length=1, max_length=64)] | None
    ) = None
    timeout: float = 2.0
    retries: Annotated[int, Field(ge=1, le=100)] = 3
    start_period: float = 0.0

    @field_validator("timeout", "start_period", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        seconds = parse_duration(value)
        if not 0 <= seconds <= 600:
            raise ValueError("must be between 0s and 10m")
        return seconds

    @model_validator(mode="after")
    def _one_kind(self) -> Probe:
        if sum(kind is not None for kind in (self.http, self.tcp, self.exec)) != 1:
            raise ValueError("a probe is exactly one of http, tcp or exec")
        return self


class ServicePolicy(_Strict):
    """x-edgefleet.services.<name>: what the service needs from the device, and how to tell it is healthy."""

    resources: Resources
    permissions: tuple[Permission, ...] = Field(default=(), max_length=32)
    probes: tuple[Probe, ...] = Field(default=(), max_length=8)

    @field_validator("permissions", mode="before")
    @classmethod
    def _permissions(cls, value: object) -> tuple[Permission, ...]:
        if not isinstance(value, list):
            raise ValueError("must be a list of permission names")
        return tuple(parse_permission(str(item)) for item in value)


class UpdatePolicy(_Strict):
    """How a device moves to this release."""

    strategy: Literal["download-then-kill", "kill-then-download", "hand-over"] = "download-then-kill"
    health_window: float = 120.0

    @field_validator("health_window", mode="before")
    @classmethod
    def _window(cls, value: object) -> float:
        seconds = parse_duration(value)
        if not 1 <= seconds <= 3600:
            raise ValueError("must be between 1s and 1h")
        return seconds


class EdgefleetBlock(_Strict):
    """The x-edgefleet block."""

    app: AppName  # the same rule the signed targets and the hub apply
    version: str
    architectures: Annotated[tuple[Arch, ...], Field(min_length=1, max_length=8)] | None = None
    update: UpdatePolicy = Field(default_factory=UpdatePolicy)
    services: dict[str, ServicePolicy]

    @field_validator("version", mode="before")
    @classmethod
    def _semver(cls, value: object) -> str:
        if not isinstance(value, str) or len(value) > 64 or not SEMVER.match(value):
            raise ValueError("must be a SemVer version like 1.4.2")
        return value


class ComposeFile(_Strict):
    """The whole file."""

    version: str | None = Field(default=None, description="Obsolete in Compose; accepted and ignored.")
    services: Annotated[dict[Name, ComposeService], Field(min_length=1, max_length=32)]
    volumes: dict[Name, dict[str, Any] | None] = Field(default_factory=dict)
    x_edgefleet: EdgefleetBlock = Field(alias="x-edgefleet")

    @field_validator("volumes")
    @classmethod
    def _plain_volumes(cls, value: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any] | None]:
        for name, options in value.items():
            if options:
                raise ValueError(f"volume {name}: driver options are not supported; declare it empty")
        return value


def _cross_problems(compose: ComposeFile) -> Iterator[tuple[str, str]]:
    policies = compose.x_edgefleet.services
    for name in compose.services:
        if name not in policies:
            yield f"x-edgefleet.services.{name}", "missing: every service states its resources"
    for name in policies:
        if name not in compose.services:
            yield f"x-edgefleet.services.{name}", "no such service"
    for name, service in compose.services.items():
        for dep in service.depends_on:
            if dep not in compose.services or dep == name:
                yield f"services.{name}.depends_on.{dep}", "no such (other) service"
        for index, volume in enumerate(service.volumes):
            if volume.source not in compose.volumes:
                yield f"services.{name}.volumes.{index}", f"volume {volume.source!r} is not declared under volumes"
        policy = policies.get(name)
        granted = {str(p) for p in policy.permissions} if policy else set()
        for index, port in enumerate(service.ports):
            if f"network-bind:{port.published}" not in granted:
                yield (
                    f"services.{name}.ports.{index}",
                    f"publishing port {port.published} needs the permission 'network-bind:{port.published}'",
                )
    if compose.x_edgefleet.update.strategy == "hand-over":
        for name, service in compose.services.items():
            if service.ports:
                yield (
                    f"services.{name}.ports",
                    "hand-over runs the old and new release side by side, and a host port cannot be bound twice;"
                    " use download-then-kill",
                )
    for cycle in _cycle(compose):
        yield "services", "depends_on forms a cycle: " + " -> ".join(cycle)


def _cycle(compose: ComposeFile) -> Iterator[list[str]]:
    graph = {name: list(service.depends_on) for name, service in compose.services.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt in graph and state.get(nxt) is None:
                found = visit(nxt, [*path, node])
                if found:
                    return found
        state[node] = 2
        return None

    for start in graph:
        if state.get(start) is None:
            found = visit(start, [])
            if found:
                yield found
                return


# --- the result --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Service:
    """A service as a device will run it."""

    name: str
    compose: ComposeService
    policy: ServicePolicy


@dataclass(frozen=True, slots=True)
class Release:
    """A validated release manifest."""

    app: str
    version: str
    architectures: tuple[str, ...] | None
    update: UpdatePolicy
    services: tuple[Service, ...]
    volumes: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.app}@{self.version}"


# --- parsing -----------------------------------------------------------------------------


def _read_yaml(raw: bytes, source: str) -> Any:
    """The YAML document in RAW, read by a SafeLoader refusing aliases and deep nesting.

    Aliases are refused as a whole (billion laughs). PyYAML loads here, when a manifest is
    first read: an agent at rest reads its installed releases' documents as JSON
    (`agent.manifests`), and the parser would cost it 1.4 MB.

    Raises:
        ManifestError: not YAML, or an alias, or nested too deep.
    """
    import yaml  # see above

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("YAML aliases are not allowed in a manifest")
            self._depth = getattr(self, "_depth", 0) + 1
            try:
                if self._depth > MAX_YAML_DEPTH:
                    raise yaml.YAMLError(f"nesting deeper than {MAX_YAML_DEPTH} levels")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    try:
        return yaml.load(raw, Loader=NoAliasLoader)  # noqa: S506  # a SafeLoader
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestError(source, [("(file)", f"not valid YAML: {str(exc).splitlines()[0][:200]}")]) from exc


def _loc(parts: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in parts if not str(p).startswith("function-")) or "(file)"


def parse_manifest(text: str | bytes, *, source: str = "compose.yaml") -> Release:
    """Parse and validate a release manifest.

    Raises:
        ManifestError: with every problem found, each naming its key path.
    """
    return release_of(read_document(text, source=source), source=source)


def read_document(text: str | bytes, *, source: str = "compose.yaml") -> Any:
    """A manifest's YAML document, read within its bounds but not yet checked (`release_of` checks it).

    Raises:
        ManifestError: larger than `MAX_MANIFEST_BYTES`, not YAML, an alias, or nested too deep.
    """
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(source, [("(file)", f"larger than {MAX_MANIFEST_BYTES} bytes")])
    return _read_yaml(raw, source)


def release_of(data: Any, *, source: str = "compose.yaml") -> Release:
    """The release a manifest's document describes, every check made (`parse_manifest` without the reading).

    Raises:
        ManifestError: with every problem found, each naming its key path.
    """
    if not isinstance(data, dict):
        raise ManifestError(source, [("(file)", "must be a mapping with services and x-edgefleet")])
    try:
        compose = ComposeFile.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(source, [_problem(error) for error in exc.errors()]) from exc
    problems = list(_cross_problems(compose))
    if problems:
        raise ManifestError(source, problems)
    block = compose.x_edgefleet
    return Release(
        app=block.app,
        version=block.version,
        architectures=block.architectures,
        update=block.update,
        services=tuple(Service(name=n, compose=s, policy=block.services[n]) for n, s in compose.services.items()),
        volumes=tuple(compose.volumes),
    )


def _problem(error: Any) -> tuple[str, str]:
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "extra_forbidden" and loc and str(loc[-1]) in FORBIDDEN_KEYS:
        return _loc(loc), f"not allowed: {FORBIDDEN_KEYS[str(loc[-1])]}"
    if error.get("type") == "extra_forbidden":
        return _loc(loc), "unknown key"
    return _loc(loc), str(error.get("msg", "invalid")).removeprefix("Value error, ")
