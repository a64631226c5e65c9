"""An engine in memory: the planners' steps applied to an `Observed` value, for unit tests of the logic above the port.

It keeps what a real engine enforces (an image before its containers, the app's network
before its containers, one container per id; removal forces, as `DockerEngine`'s does),
records every step it carries out (`done`), and answers an update transaction's questions
(container ids, health, logs, free space) from what it holds. A container whose definition
is in `failing` exits with code 1 as soon as it starts, as a release that crashes does.
The same scenarios run against Podman and Docker Engine in the integration tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from edgefleet.agent.errors import EngineError
from edgefleet.agent.health import ServiceHealth
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
from edgefleet.agent.spec import ContainerSpec


class MemoryEngine:
    """A `TransactionEngine` and reconcile `Engine` whose whole state is `state`."""

    def __init__(
        self, observed: Observed | None = None, *, failing: frozenset[str] = frozenset(), free: int | None = None
    ) -> None:
        self.state = observed or Observed()
        self.failing = set(failing)
        """Config digests whose containers exit (code 1) when started."""
        self.done: list[Step] = []
        self.bundles: dict[str, Path] = {}
        self._free = free
        self._exited: set[str] = set()
        self._ids = itertools.count()

    # --- the ports ------------------------------------------------------------------

    def observe(self, images: frozenset[str] = frozenset()) -> Observed:
        return self.state

    def execute(self, step: Step, specs: Mapping[tuple[str, str], ContainerSpec]) -> None:
        self.apply(step)
        self.done.append(step)

    def ids(self, app: str) -> dict[tuple[str, str], str]:
        return {(c.service, c.config_digest): c.id for c in self.state.containers if c.app == app}

    def health(self, container_id: str) -> ServiceHealth:
        container = self._one(container_id)
        if container.running:
            return ServiceHealth(container.service, "running", None, 0)
        exited = container.id in self._exited
        return ServiceHealth(container.service, "exited" if exited else "created", None, 0, 1 if exited else None)

    def probe(self, container_id: str, argv: tuple[str, ...], *, timeout: float) -> bool:
        return self._one(container_id).running

    def address(self, container_id: str, app: str) -> str | None:
        return None

    def logs(self, container_id: str) -> str:
        container = self._one(container_id)
        return f"{container.service}: exited with code 1\n" if container.id in self._exited else ""

    def storage_free(self) -> int | None:
        return self._free

    # --- the steps ------------------------------------------------------------------

    def apply(self, step: Step) -> None:
        """Change `state` as the engine would carry `step` out.

        Raises:
            EngineError: what a real engine refuses (a container without its image or network,
                an unknown container, a network removed while containers remain).
        """
        s = self.state
        containers = list(s.containers)
        match step:
            case FetchImage(image=image):
                self.state = replace(s, images=s.images | {image})
            case CreateNetwork(app=app):
                self.state = replace(s, networks=s.networks | {app})
            case CreateVolume(app=app, volume=volume):
                self.state = replace(s, volumes=s.volumes | {(app, volume)})
            case CreateContainer(target=t):
                if t.image not in s.images or t.app not in s.networks:
                    raise EngineError(f"create {t.app}/{t.service}: no image {t.image} or no network")
                new = ObservedContainer(f"new{next(self._ids)}", t.app, t.service, t.release, t.config_digest, False)
                self.state = replace(s, containers=(*containers, new))
            case StartContainer(app=app, service=service, container_id=cid, config_digest=digest):
                container = self._started(app, service, cid, digest)
                crashes = container.config_digest in self.failing
                if crashes:
                    self._exited.add(container.id)
                else:
                    self._exited.discard(container.id)
                containers[containers.index(container)] = replace(container, running=not crashes)
                self.state = replace(s, containers=tuple(containers))
            case StopContainer(container_id=cid):
                container = self._one(cid)
                containers[containers.index(container)] = replace(container, running=False)
                self.state = replace(s, containers=tuple(containers))
            case RemoveContainer(container_id=cid):
                self._one(cid)
                self.state = replace(s, containers=tuple(c for c in containers if c.id != cid))
            case RemoveNetwork(app=app):
                if any(c.app == app for c in containers):
                    raise EngineError(f"network of {app} still has containers")
                self.state = replace(s, networks=s.networks - {app})

    def _one(self, container_id: str) -> ObservedContainer:
        found = [c for c in self.state.containers if c.id == container_id]
        if not found:
            raise EngineError(f"no container {container_id}")
        return found[0]

    def _started(self, app: str, service: str, cid: str | None, digest: str | None) -> ObservedContainer:
        if cid is not None:
            return self._one(cid)
        found = [
            c
            for c in self.state.containers
            if c.app == app and c.service == service and (c.config_digest == digest if digest else not c.running)
        ]
        if len(found) != 1:
            raise EngineError(f"expected one new container for {app}/{service}, found {len(found)}")
        return found[0]
