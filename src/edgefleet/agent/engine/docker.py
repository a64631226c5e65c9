"""The Docker Engine API adapter (docker-py): observe what the agent owns, and carry out planned steps.

Works with Docker, Moby, balenaEngine and Podman's Docker-compatible socket. Everything it
creates carries the agent's labels (``io.edgefleet.managed``, owner = the device ID, app,
service, release, config digest), and it only ever lists, changes or removes objects with
its own owner label, so containers, networks and volumes it did not create are never touched.

Names: containers ``edgefleet_APP_SERVICE_DIGEST8``, networks ``edgefleet_APP`` (internal:
no route out) and ``edgefleet_APP_egress`` (for services with the `network` permission
or published ports), volumes ``edgefleet_APP_VOLUME``. Each app has its own networks, so
apps cannot reach each other. Several agents can share one engine (a test bench, a demo)
when each has its own `namespace`: names then start ``edgefleet-NAMESPACE_``. docker-py
errors become `EngineError` here (`agent.engine.boundary`).

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

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import EndpointConfig, LogConfig, Mount, Ulimit

from edgefleet.agent.engine.boundary import converted as _converted
from edgefleet.agent.engine.images import EngineImages
from edgefleet.agent.engine.info import EngineInfo, api_level, engine_kind
from edgefleet.agent.errors import EngineError
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
STOP_TIMEOUT = 10
REMOVE_ATTEMPTS = 5
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 4096
LOG_CONFIG = LogConfig(type="json-file", config={"max-size": LOG_MAX_SIZE, "max-file": str(LOG_MAX_FILES)})


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
    _client: docker.DockerClient | None = None
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
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with _converted(f"connect to {self.base_url}"):
                self._client = docker.DockerClient(base_url=self.base_url, version=API_VERSION, timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._info = None

    # --- observe ------------------------------------------------------------------

    def _managed(self) -> list[_Listed]:
        """The agent's own containers, from one listing.

        Sparse: no inspect per container, so a container someone removes meanwhile cannot fail it.
        """
        with _converted("list containers"):
            found = self.client.containers.list(all=True, sparse=True, filters={"label": self._mine})
        return [
            _Listed(str(c.attrs.get("Id", c.id)), dict(c.attrs.get("Labels") or {}), _state(c.attrs.get("State")))
            for c in found
        ]

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
        with _converted("list networks"):
            networks = [
                n
                for n in self.client.networks.list(filters={"label": f"{OWNER}={self.owner}"})
                if self._owns(n.attrs.get("Labels"))
            ]
        with _converted("list volumes"):
            # One label per filter, and checked again here: Podman's volume listing ignores a list of them.
            listed = self.client.volumes.list(filters={"label": f"{OWNER}={self.owner}"})
        volumes = [v for v in listed if self._owns(v.attrs.get("Labels"))]
        return Observed(
            containers=tuple(containers),
            networks=frozenset(
                n.attrs.get("Labels", {}).get(APP, "") for n in networks if not n.name.endswith("_egress")
            ),
            volumes=frozenset(
                (v.attrs.get("Labels", {}).get(APP, ""), v.attrs.get("Labels", {}).get(VOLUME, "")) for v in volumes
            ),
            images=frozenset(image for image in images if self._has_image(image)),
        )

    def _has_image(self, image: str) -> bool:
        return self._images.local(self.client, self.bundles, image) is not None

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
            with contextlib.suppress(EngineError), _converted(f"probe {container_id}"):
                code, _ = self._container(container_id).exec_run(list(argv))
                result.append(int(code if code is not None else 1))

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout)
        return result == [0]

    def address(self, container_id: str, app: str) -> str | None:
        """The container's IP address on its app's network (where the agent's HTTP and TCP probes go)."""
        networks = self.inspect(container_id).get("NetworkSettings", {}).get("Networks") or {}
        address = (networks.get(network_name(app, namespace=self.namespace)) or {}).get("IPAddress")
        return str(address) if address else None

    def logs(self, container_id: str, *, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines the container wrote (stdout and stderr), at most LOG_TAIL_BYTES of them."""
        with _converted(f"logs of {container_id}"):
            raw = self._container(container_id).logs(stdout=True, stderr=True, tail=lines)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return text[-LOG_TAIL_BYTES:]

    def storage_free(self) -> int | None:
        """Free bytes where the engine keeps images (None when the engine does not say where)."""
        with _converted("engine info"):
            info = self.client.info()
        root = info.get("DockerRootDir") or (info.get("Store") or {}).get("GraphRoot")
        try:
            return shutil.disk_usage(root).free if root else None
        except OSError:
            return None

    def remove_image(self, image: str) -> bool:
        """Remove an image the agent fetched; False when the engine keeps it (in use, named by others, or gone)."""
        return self._images.remove(self.client, self.bundles, image)

    def inspect(self, container_id: str) -> dict[str, Any]:
        """The engine's full description of one of the agent's containers."""
        with _converted(f"inspect {container_id}"):
            attrs: dict[str, Any] = self.client.containers.get(container_id).attrs
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
                with _converted(f"create volume {volume}"):
                    self.client.volumes.create(
                        volume_name(app, volume, namespace=self.namespace),
                        labels={**self._labels, APP: app, VOLUME: volume},
                    )
            case CreateContainer(target=target):
                self._create(specs[(target.app, target.service)])
            case StartContainer(app=app, service=service, container_id=cid, config_digest=digest):
                container = self._container(cid) if cid else self._created(app, service, digest)
                with _converted(f"start {app}/{service}"):
                    container.start()
            case StopContainer(app=app, service=service, container_id=cid):
                with _converted(f"stop {app}/{service}"):
                    self._container(cid).stop(timeout=STOP_TIMEOUT)
            case RemoveContainer(app=app, service=service, container_id=cid):
                self._remove(self._container(cid), f"{app}/{service}")
            case RemoveNetwork(app=app):
                for name in (
                    network_name(app, namespace=self.namespace),
                    network_name(app, egress=True, namespace=self.namespace),
                ):
                    with _converted(f"remove network {name}"), contextlib.suppress(docker.errors.NotFound):
                        network = self.client.networks.get(name)
                        if self._owns(network.attrs.get("Labels")):
                            network.remove()

    def _remove(self, container: Container, what: str) -> None:
        """Remove, retrying briefly: Podman refuses while a container is between restarts."""
        for attempt in range(REMOVE_ATTEMPTS):
            try:
                with _converted(f"remove {what}"):
                    container.remove(force=True)
                return
            except EngineError:
                if attempt == REMOVE_ATTEMPTS - 1:
                    raise
                time.sleep(0.5)
                with contextlib.suppress(EngineError), _converted(f"stop {what}"):
                    container.stop(timeout=1)

    def _container(self, container_id: str) -> Container:
        with _converted(f"find container {container_id}"):
            container: Container = self.client.containers.get(container_id)
        if not self._owns(container.labels):
            raise EngineError(f"container {container_id} is not this agent's", retryable=False)
        return container

    def _created(self, app: str, service: str, digest: str | None) -> Container:
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
        with _converted(f"network {name}"):
            try:
                network = self.client.networks.get(name)
            except docker.errors.NotFound:
                network = self.client.networks.create(name, internal=not egress, labels={**self._labels, APP: app})
            network.reload()
        # Never adopt someone else's network of that name, nor one that would give outbound access.
        if not self._owns(network.attrs.get("Labels")) or bool(network.attrs.get("Internal")) == egress:
            raise EngineError(f"network {name} exists and is not this agent's {app} network", retryable=False)
        return name

    def _fetch(self, image: str) -> None:
        self._images.fetch(self.client, self.bundles, image)

    def identify(self) -> EngineInfo:
        """Which engine this is and its versions (asked once per connection).

        Raises:
            EngineError: the engine cannot be asked, or (not retryable) its API is older than `API_VERSION`.
        """
        if self._info is None:
            with _converted("engine version"):
                version = self.client.api.version(api_version=False)  # unversioned: answers even an old engine
            kind, release = engine_kind(version), str(version.get("Version", "unknown"))[:64]
            api_version = str(version.get("ApiVersion", "0"))[:16]
            if api_level(api_version) < api_level(API_VERSION):
                raise EngineError(
                    f"{kind} {release} offers Engine API {api_version}; the agent needs {API_VERSION} or newer "
                    "(Docker 20.10, Podman 4.3 and newer are tested)",
                    retryable=False,
                )
            with _converted("engine info"):
                root = str(self.client.info().get("DockerRootDir") or "")
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
        mounts = [
            Mount(
                target=m.target,
                source=volume_name(spec.app, m.source, namespace=self.namespace) if m.kind == "volume" else m.source,
                type=m.kind,
                read_only=m.read_only,
            )
            for m in spec.mounts
        ]
        health = None
        if spec.health is not None:
            health = {
                "test": list(spec.health.test),
                "interval": int(spec.health.interval * 1e9),
                "timeout": int(spec.health.timeout * 1e9),
                "retries": spec.health.retries,
                "start_period": int(spec.health.start_period * 1e9),
            }
        labels = {
            **dict(spec.labels),
            **self._labels,
            APP: spec.app,
            SERVICE: spec.service,
            RELEASE: spec.release,
            DIGEST: spec.config_digest,
        }
        with _converted(f"create {spec.app}/{spec.service}"):
            container = self.client.containers.create(
                self._images.local(self.client, self.bundles, spec.image) or spec.image,
                command=list(spec.command) if spec.command is not None else None,
                entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
                name=container_name(spec, namespace=self.namespace),
                hostname=spec.service,
                environment=dict(spec.environment),
                labels=labels,
                network=internal,
                networking_config={internal: EndpointConfig(API_VERSION, aliases=[spec.service])},
                ports={f"{p.target}/{p.protocol}": (p.host_ip, p.published) for p in spec.ports},
                mounts=mounts,
                devices=list(spec.devices),
                device_cgroup_rules=list(spec.device_cgroup_rules),
                cap_drop=["ALL"],
                cap_add=list(spec.cap_add),
                security_opt=["no-new-privileges"],
                privileged=False,
                read_only=True,
                tmpfs=dict(TMPFS),
                mem_limit=spec.memory,
                memswap_limit=spec.memory,
                nano_cpus=spec.nano_cpus,
                pids_limit=spec.pids,
                init=True,
                ulimits=[Ulimit(name="nofile", soft=NOFILE, hard=NOFILE), Ulimit(name="nproc", soft=NPROC, hard=NPROC)],
                log_config=LOG_CONFIG,
                restart_policy={"Name": "on-failure", "MaximumRetryCount": spec.restart_max}
                if spec.restart_max
                else {"Name": "no"},
                healthcheck=health,
            )
            if egress is not None:
                self.client.networks.get(egress).connect(container, aliases=[spec.service])
