"""The Docker Engine API adapter: observe what the agent owns, and carry out planned steps.

Works with Docker, Moby, balenaEngine and Podman's Docker-compatible socket. Everything it
creates carries the agent's labels (``io.edgefleet.managed``, owner = the device ID, app,
service, release, config digest), and it only ever lists, changes or removes objects with
its own owner label, so containers, networks and volumes it did not create are never touched.

Names: containers ``edgefleet_APP_SERVICE_DIGEST8``, networks ``edgefleet_APP`` (internal:
no route out) and ``edgefleet_APP_egress`` (for services with the `network` permission
or published ports), volumes ``edgefleet_APP_VOLUME``. Each app has its own networks, so
apps cannot reach each other. Several agents can share one engine (a test bench, a demo)
when each has its own `namespace`: names then start ``edgefleet-NAMESPACE_``. The calls go
through `agent.engine.api` (httpx on the engine's socket), which turns every failure into
`EngineError`; `create_body` is the container definition as the Engine API takes it (pure).

Images are pulled by digest, or loaded from a release's verified bundle; `agent.engine.images`
finds them by the release's references (Docker Engine knows an image it loaded only by ID).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.engine.api import EngineApi, demultiplexed, filters, segment
from edgefleet.agent.engine.images import EngineImages
from edgefleet.agent.engine.info import EngineInfo, api_level, engine_kind
from edgefleet.agent.errors import EngineError, EngineNotFoundError
from edgefleet.agent.health import ServiceHealth
from edgefleet.agent.hostpaths import bind_problem, protected_paths
from edgefleet.agent.plan import (
    CreateContainer,
    CreateNetwork,
    CreateVolume,
    FetchImage,
    Observed,
    ObservedContainer,
    RemoveContainer,
    RemoveNetwork,
    StartContainer,
    Step,
    StopContainer,
)
from edgefleet.agent.spec import INTERFACE_BINDS, LOG_MAX_FILES, LOG_MAX_SIZE, NOFILE, TMPFS, ContainerSpec

log = logging.getLogger(__name__)
MANAGED = "io.edgefleet.managed"
APP, SERVICE, RELEASE, DIGEST, VOLUME, OWNER = (
    f"io.edgefleet.{name}" for name in ("app", "service", "release", "config-digest", "volume", "owner")
)
NPROC = 4096
"""Set together with nofile: Podman otherwise fills in an nproc above some hosts' hard limit."""
API_VERSION = "1.41"
"""The Engine API version the agent speaks, and the oldest an engine may offer: Docker 20.10, Podman 4.3 (tested)."""
LOG_CONFIG = {"Type": "json-file", "Config": {"max-size": LOG_MAX_SIZE, "max-file": str(LOG_MAX_FILES)}}


@dataclass(frozen=True, slots=True)
class _Listed:
    """One of the agent's containers as a listing shows it."""

    id: str
    labels: dict[str, str]
    status: str


def _state(value: object) -> str:
    """The state word of a listing entry (a string there, a mapping in a full inspect)."""
    if isinstance(value, dict):
        return str(value.get("Status", "unknown"))
    return str(value or "unknown").lower()


def _prefix(namespace: str) -> str:
    return f"edgefleet-{namespace}" if namespace else "edgefleet"


def network_name(app: str, *, egress: bool = False, namespace: str = "") -> str:
    return f"{_prefix(namespace)}_{app}_egress" if egress else f"{_prefix(namespace)}_{app}"


def volume_name(app: str, volume: str, *, namespace: str = "") -> str:
    return f"{_prefix(namespace)}_{app}_{volume}"


def container_name(spec: ContainerSpec, *, namespace: str = "") -> str:
    return f"{_prefix(namespace)}_{spec.app}_{spec.service}_{spec.config_digest[:8]}"


@dataclass
class DockerEngine:
    """One engine endpoint (e.g. ``unix:///run/podman/podman.sock``)."""

    base_url: str
    owner: str = "default"
    """This agent's name for what it creates (the device ID): another agent's objects are not its own."""
    timeout: float = 120.0
    namespace: str = ""
    """Prefixes the names of what it creates, so several agents can share one engine ("": none)."""
    bundles: dict[str, Path] = field(default_factory=dict)
    """Image (name@sha256:...) -> a verified bundle archive to load instead of pulling."""
    protected: tuple[str, ...] = ()
    """The agent's own paths (`agent.hostpaths.protected_paths`): never bind-mounted into a container."""
    bounds: Bounds = DEFAULT_BOUNDS
    """Answer sizes, a pull's silence, stop timeout, removal attempts, log tails (`agent.bounds`)."""
    _api: EngineApi | None = None
    _engine_paths: tuple[str, ...] | None = None
    _info: EngineInfo | None = None
    _images: EngineImages = field(default_factory=EngineImages, repr=False)

    @property
    def _labels(self) -> dict[str, str]:
        return {MANAGED: "true", OWNER: self.owner}

    @property
    def _mine(self) -> list[str]:
        return [f"{MANAGED}=true", f"{OWNER}={self.owner}"]

    def _owns(self, labels: dict[str, str] | None) -> bool:
        return labels is not None and labels.get(MANAGED) == "true" and labels.get(OWNER) == self.owner

    @property
    def api(self) -> EngineApi:
        if self._api is None:
            self._api = EngineApi(self.base_url, version=API_VERSION, timeout=self.timeout, bounds=self.bounds)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
        self._info = None

    # --- observe ------------------------------------------------------------------

    def _managed(self) -> list[_Listed]:
        """The agent's own containers, from one listing.

        Sparse: no inspect per container, so a container someone removes meanwhile cannot fail it.
        """
        found = self.api.call(
            "list containers", "GET", "/containers/json", params={"all": "1", "filters": filters(self._mine)}
        )
        return [_Listed(str(c.get("Id", "")), dict(c.get("Labels") or {}), _state(c.get("State"))) for c in found or []]

    def observe(self, images: frozenset[str] = frozenset()) -> Observed:
        """The agent's containers, networks and volumes, and which of `images` are present."""
        containers = []
        for container in self._managed():
            labels = container.labels
            containers.append(
                ObservedContainer(
                    id=container.id,
                    app=labels.get(APP, ""),
                    service=labels.get(SERVICE, ""),
                    release=labels.get(RELEASE, ""),
                    config_digest=labels.get(DIGEST, ""),
                    running=container.status in ("running", "restarting"),
                )
            )
        mine = {"filters": filters([f"{OWNER}={self.owner}"])}
        listed_networks = self.api.call("list networks", "GET", "/networks", params=mine) or []
        networks = [n for n in listed_networks if self._owns(n.get("Labels"))]
        # One label per filter, and checked again here: Podman's volume listing ignores a list of them.
        listed_volumes = (self.api.call("list volumes", "GET", "/volumes", params=mine) or {}).get("Volumes") or []
        volumes = [v for v in listed_volumes if self._owns(v.get("Labels"))]
        return Observed(
            containers=tuple(containers),
            networks=frozenset(
                n["Labels"].get(APP, "") for n in networks if not str(n.get("Name", "")).endswith("_egress")
            ),
            volumes=frozenset((v["Labels"].get(APP, ""), v["Labels"].get(VOLUME, "")) for v in volumes),
            images=frozenset(image for image in images if self._has_image(image)),
        )

    def _has_image(self, image: str) -> bool:
        return self._images.local(self.api, self.bundles, image) is not None

    def status(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per app and service: state, health, restart count and image, for the device's report."""
        report: dict[str, dict[str, dict[str, Any]]] = {}
        for listed in self._managed():
            try:
                attrs = self.inspect(listed.id)
            except EngineError:
                continue  # removed since the listing
            state = attrs.get("State", {})
            report.setdefault(listed.labels.get(APP, ""), {})[listed.labels.get(SERVICE, "")] = {
                "state": listed.status,
                "health": (state.get("Health") or {}).get("Status"),
                "restarts": attrs.get("RestartCount", 0),
                "release": listed.labels.get(RELEASE),
                "image": self._images.reported(attrs.get("Config", {}).get("Image")),
            }
        return report

    def ids(self, app: str) -> dict[tuple[str, str], str]:
        """(service, config digest) -> container id of each of the agent's containers of `app`, from one listing."""
        return {
            (listed.labels.get(SERVICE, ""), listed.labels.get(DIGEST, "")): listed.id
            for listed in self._managed()
            if listed.labels.get(APP) == app
        }

    def health(self, container_id: str) -> ServiceHealth:
        """State, health, restart count and exit code of one of the agent's containers."""
        attrs = self.inspect(container_id)
        state = attrs.get("State", {})
        return ServiceHealth(
            service=attrs.get("Config", {}).get("Labels", {}).get(SERVICE, ""),
            state=str(state.get("Status", "unknown")),
            health=(state.get("Health") or {}).get("Status") or None,
            restarts=int(attrs.get("RestartCount", 0) or 0),
            exit_code=state.get("ExitCode"),
        )

    def probe(self, container_id: str, argv: tuple[str, ...], *, timeout: float) -> bool:
        """Run a health probe inside the container; True when it exits 0 within `timeout`.

        The agent runs Compose healthchecks itself while it watches a new release, because not
        every engine runs them (Podman needs systemd timers for that).
        """
        result: list[int] = []

        def run() -> None:
            with contextlib.suppress(EngineError):
                result.append(self._exec(container_id, argv, timeout=timeout))

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout)
        return result == [0]

    def _exec(self, container_id: str, argv: tuple[str, ...], *, timeout: float) -> int:
        """Run `argv` in one of the agent's containers to its end; its exit code (1 when the engine gives none).

        Each request waits at most `timeout`: a probe that hangs gives its connection back then.
        """
        what = f"probe {container_id}"
        created = self.api.call(
            what,
            "POST",
            f"/containers/{segment(self._container(container_id))}/exec",
            body={
                "User": "",
                "Privileged": False,
                "Tty": False,
                "AttachStdin": False,
                "AttachStdout": True,
                "AttachStderr": True,
                "Cmd": list(argv),
            },
            timeout=timeout,
        )
        exec_id = segment(str((created or {}).get("Id", "")))
        self.api.raw(what, "POST", f"/exec/{exec_id}/start", body={"Detach": False, "Tty": False}, timeout=timeout)
        code = (self.api.call(what, "GET", f"/exec/{exec_id}/json", timeout=timeout) or {}).get("ExitCode")
        return int(code) if isinstance(code, int) else 1

    def address(self, container_id: str, app: str) -> str | None:
        """The container's IP address on its app's network (where the agent's HTTP and TCP probes go)."""
        networks = self.inspect(container_id).get("NetworkSettings", {}).get("Networks") or {}
        address = (networks.get(network_name(app, namespace=self.namespace)) or {}).get("IPAddress")
        return str(address) if address else None

    def logs(self, container_id: str, *, lines: int | None = None) -> str:
        """The last lines the container wrote: `lines` (`Bounds.log_tail_lines`), `Bounds.log_tail_bytes` at most."""
        lines = lines or self.bounds.log_tail_lines
        raw = self.api.raw(
            f"logs of {container_id}",
            "GET",
            f"/containers/{segment(self._container(container_id))}/logs",
            params={"stdout": "1", "stderr": "1", "tail": str(lines)},
        )
        return demultiplexed(raw).decode("utf-8", "replace")[-self.bounds.log_tail_bytes :]

    def storage_free(self) -> int | None:
        """Free bytes where the engine keeps images (None when the engine does not say where)."""
        info = self.api.call("engine info", "GET", "/info") or {}
        root = info.get("DockerRootDir") or (info.get("Store") or {}).get("GraphRoot")
        try:
            return shutil.disk_usage(root).free if root else None
        except OSError:
            return None

    def remove_image(self, image: str) -> bool:
        """Remove an image the agent fetched; False when the engine keeps it (in use, named by others, or gone)."""
        return self._images.remove(self.api, self.bundles, image)

    def inspect(self, container_id: str) -> dict[str, Any]:
        """The engine's full description of one of the agent's containers."""
        path = f"/containers/{segment(container_id)}/json"
        attrs: dict[str, Any] = self.api.call(f"inspect {container_id}", "GET", path)
        return attrs

    # --- act --------------------------------------------------------------------------

    def execute(self, step: Step, specs: Mapping[tuple[str, str], ContainerSpec]) -> None:
        """Carry out one step; `specs` gives each (app, service)'s container definition."""
        match step:
            case FetchImage(image=image):
                self._fetch(image)
            case CreateNetwork(app=app):
                self._ensure_network(app, egress=False)
            case CreateVolume(app=app, volume=volume):
                name = volume_name(app, volume, namespace=self.namespace)
                body = {"Name": name, "Labels": {**self._labels, APP: app, VOLUME: volume}}
                self.api.send(f"create volume {volume}", "POST", "/volumes/create", body=body)
            case CreateContainer(target=target):
                self._create(specs[(target.app, target.service)])
            case StartContainer(app=app, service=service, container_id=cid, config_digest=digest):
                found = self._container(cid) if cid else self._created(app, service, digest)
                self.api.send(f"start {app}/{service}", "POST", f"/containers/{segment(found)}/start")
            case StopContainer(app=app, service=service, container_id=cid):
                self._stop(self._container(cid), f"{app}/{service}", self.bounds.stop_timeout)
            case RemoveContainer(app=app, service=service, container_id=cid):
                self._remove(self._container(cid), f"{app}/{service}")
            case RemoveNetwork(app=app):
                for name in (
                    network_name(app, namespace=self.namespace),
                    network_name(app, egress=True, namespace=self.namespace),
                ):
                    with contextlib.suppress(EngineNotFoundError):
                        network = self.api.call(f"remove network {name}", "GET", f"/networks/{segment(name)}")
                        if self._owns(network.get("Labels")):
                            self.api.send(f"remove network {name}", "DELETE", f"/networks/{segment(network['Id'])}")

    def _stop(self, container_id: str, what: str, seconds: int) -> None:
        """Stop, giving the container `seconds` to end before the engine kills it (the request waits that long)."""
        self.api.send(
            f"stop {what}",
            "POST",
            f"/containers/{segment(container_id)}/stop",
            params={"t": str(seconds)},
            timeout=seconds + self.timeout,
        )

    def _remove(self, container_id: str, what: str) -> None:
        """Remove, retrying briefly: Podman refuses while a container is between restarts."""
        for attempt in range(self.bounds.remove_attempts):
            try:
                self.api.send(
                    f"remove {what}", "DELETE", f"/containers/{segment(container_id)}", params={"force": "true"}
                )
                return
            except EngineError:
                if attempt == self.bounds.remove_attempts - 1:
                    raise
                time.sleep(0.5)
                with contextlib.suppress(EngineError):
                    self._stop(container_id, what, 1)

    def _container(self, container_id: str) -> str:
        """The ID of one of the agent's own containers.

        Raises:
            EngineError: no such container, or (not retryable) not this agent's.
        """
        attrs = self.api.call(f"find container {container_id}", "GET", f"/containers/{segment(container_id)}/json")
        if not self._owns((attrs.get("Config") or {}).get("Labels")):
            raise EngineError(f"container {container_id} is not this agent's", retryable=False)
        return str(attrs.get("Id") or container_id)

    def _created(self, app: str, service: str, digest: str | None) -> str:
        """The container of `app`/`service` created earlier: the one of definition `digest`, or the one not running."""
        found = [
            c
            for c in self._managed()
            if c.labels.get(APP) == app
            and c.labels.get(SERVICE) == service
            and (c.labels.get(DIGEST) == digest if digest else c.status in ("created", "exited"))
        ]
        if len(found) != 1:
            raise EngineError(f"expected one new container for {app}/{service}, found {len(found)}")
        return self._container(found[0].id)

    def _ensure_network(self, app: str, *, egress: bool) -> str:
        name = network_name(app, egress=egress, namespace=self.namespace)
        what, path = f"network {name}", f"/networks/{segment(name)}"
        try:
            network = self.api.call(what, "GET", path)
        except EngineNotFoundError:
            body: dict[str, Any] = {"Name": name, "Labels": {**self._labels, APP: app}}
            if not egress:
                body["Internal"] = True
            self.api.send(what, "POST", "/networks/create", body=body)
            network = self.api.call(what, "GET", path)
        # Never adopt someone else's network of that name, nor one that would give outbound access.
        if not self._owns(network.get("Labels")) or bool(network.get("Internal")) == egress:
            raise EngineError(f"network {name} exists and is not this agent's {app} network", retryable=False)
        return name

    def _fetch(self, image: str) -> None:
        self._images.fetch(self.api, self.bundles, image)

    def identify(self) -> EngineInfo:
        """Which engine this is and its versions (asked once per connection).

        Raises:
            EngineError: the engine cannot be asked, or (not retryable) its API is older than `API_VERSION`.
        """
        if self._info is None:
            version = self.api.call("engine version", "GET", "/version", versioned=False) or {}  # an old engine too
            kind, release = engine_kind(version), str(version.get("Version", "unknown"))[:64]
            api_version = str(version.get("ApiVersion", "0"))[:16]
            if api_level(api_version) < api_level(API_VERSION):
                raise EngineError(
                    f"{kind} {release} offers Engine API {api_version}; the agent needs {API_VERSION} or newer "
                    "(Docker 20.10, Podman 4.3 and newer are tested)",
                    retryable=False,
                )
            root = str((self.api.call("engine info", "GET", "/info") or {}).get("DockerRootDir") or "")
            self._info = EngineInfo(kind, release, api_version, root)
        return self._info

    def _own_paths(self) -> tuple[str, ...]:
        """The agent's paths, and this engine's socket and data root (asked once)."""
        if self._engine_paths is None:
            root = self.identify().root_dir
            socket = self.base_url.removeprefix("unix://") if self.base_url.startswith("unix://") else None
            self._engine_paths = protected_paths([socket, root or None])
        return (*self.protected, *self._engine_paths)

    def _check_binds(self, spec: ContainerSpec) -> None:
        """Refuse, before anything is created, a host path the device never shares (however the release got here).

        Raises:
            EngineError: not retryable; names the path and why.
        """
        for mount in spec.mounts:
            if mount.kind != "bind" or mount in INTERFACE_BINDS.values():
                continue
            problem = bind_problem(mount.source, protected=self._own_paths())
            if problem is None and mount.target != mount.source:
                problem = f"{mount.source} would be mounted at {mount.target}; host paths keep their place"
            if problem is not None:
                raise EngineError(f"{spec.app}/{spec.service}: host path refused: {problem}", retryable=False)

    def _create(self, spec: ContainerSpec) -> None:
        self._check_binds(spec)
        internal = self._ensure_network(spec.app, egress=False)
        egress = self._ensure_network(spec.app, egress=True) if spec.egress else None
        image = self._images.local(self.api, self.bundles, spec.image) or spec.image
        what = f"create {spec.app}/{spec.service}"
        created = self.api.call(
            what,
            "POST",
            "/containers/create",
            params={"name": container_name(spec, namespace=self.namespace)},
            body=create_body(spec, image=image, network=internal, owner=self._labels, namespace=self.namespace),
        )
        if egress is not None:
            body = {"Container": str((created or {}).get("Id", "")), "EndpointConfig": {"Aliases": [spec.service]}}
            self.api.send(what, "POST", f"/networks/{segment(egress)}/connect", body=body)


def create_body(
    spec: ContainerSpec, *, image: str, network: str, owner: Mapping[str, str], namespace: str = ""
) -> dict[str, Any]:
    """The Engine API's container definition for `spec` (pure): confined as DESIGN.md says, on the app's network.

    The same definition docker-py sent for these settings (tests/golden/engine_create.json),
    so engines see no change from the adapter's change.
    """
    host: dict[str, Any] = {
        "NetworkMode": network,
        "Mounts": [
            {
                "Target": m.target,
                "Source": volume_name(spec.app, m.source, namespace=namespace) if m.kind == "volume" else m.source,
                "Type": m.kind,
                "ReadOnly": m.read_only,
            }
            for m in spec.mounts
        ],
        "DeviceCgroupRules": list(spec.device_cgroup_rules),
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "ReadonlyRootfs": True,
        "Tmpfs": dict(TMPFS),
        "Memory": spec.memory,
        "MemorySwap": spec.memory,
        "Init": True,
        "Ulimits": [
            {"Name": "nofile", "Soft": NOFILE, "Hard": NOFILE},
            {"Name": "nproc", "Soft": NPROC, "Hard": NPROC},
        ],
        "LogConfig": LOG_CONFIG,
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": spec.restart_max}
        if spec.restart_max
        else {"Name": "no"},
    }
    if spec.devices:
        host["Devices"] = [_device(device) for device in spec.devices]
    if spec.cap_add:
        host["CapAdd"] = list(spec.cap_add)
    if spec.nano_cpus:
        host["NanoCpus"] = spec.nano_cpus
    if spec.pids:
        host["PidsLimit"] = spec.pids
    if spec.ports:
        host["PortBindings"] = {
            f"{p.target}/{p.protocol}": [{"HostIp": p.host_ip, "HostPort": str(p.published)}] for p in spec.ports
        }
    body: dict[str, Any] = {
        "Hostname": spec.service,
        "Image": image,
        "Labels": {
            **dict(spec.labels),
            **owner,
            APP: spec.app,
            SERVICE: spec.service,
            RELEASE: spec.release,
            DIGEST: spec.config_digest,
        },
        "AttachStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "OpenStdin": False,
        "StdinOnce": False,
        "Tty": False,
        "NetworkDisabled": False,
        "HostConfig": host,
        "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": [spec.service]}}},
    }
    if spec.command is not None:
        body["Cmd"] = list(spec.command)
    if spec.entrypoint is not None:
        body["Entrypoint"] = list(spec.entrypoint)
    if spec.environment:
        body["Env"] = [f"{name}={value}" for name, value in spec.environment]
    if spec.ports:
        body["ExposedPorts"] = {f"{p.target}/{p.protocol}": {} for p in spec.ports}
    if spec.health is not None:
        body["Healthcheck"] = {
            "Test": list(spec.health.test),
            "Interval": int(spec.health.interval * 1e9),
            "Timeout": int(spec.health.timeout * 1e9),
            "Retries": spec.health.retries,
            "StartPeriod": int(spec.health.start_period * 1e9),
        }
    return body


def _device(device: str) -> dict[str, str]:
    """``HOST[:CONTAINER[:PERMISSIONS]]`` as the Engine API takes a device."""
    parts = device.split(":")
    return {
        "PathOnHost": parts[0],
        "PathInContainer": parts[1] if len(parts) > 1 else parts[0],
        "CgroupPermissions": parts[2] if len(parts) > 2 else "rwm",
    }
