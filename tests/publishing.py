"""Test helpers for the signing path: a publisher with keys, apps to release, and a device that verifies.

They drive the same library code the CLI and the agent use, against an in-process hub.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, Targets
from tuf.ngclient import FetcherInterface

from edgefleet.agent.identity import LocalIdentity
from edgefleet.agent.truststore import TrustStore
from edgefleet.agent.verify import ReleaseVerifier, VerifiedRelease
from edgefleet.publisher.delegation import delegate, revoke
from edgefleet.publisher.keys import (
    Role,
    init_delegated_keys,
    init_keys,
    key_from_wire,
    load_delegated,
    load_index,
    load_signers,
)
from edgefleet.publisher.metadata import make_root, sign_root
from edgefleet.publisher.release import Exporter, build, sign
from edgefleet.publisher.rotation import Rotation, rotate
from edgefleet.publisher.state import save_root

IMAGE = "registry.example/acme/sensor@sha256:" + "a" * 64


def fake_oci_archive(image: str, destination: Path) -> None:
    """Stands in for an image export where only the bytes matter (hashing, signing, transport)."""
    destination.write_bytes(b"OCI archive of " + image.encode() + b"\n" + bytes(range(256)) * 64)


def compose(app: str = "sensor", version: str = "1.0.0", *, architectures: str = "[amd64, arm64]") -> str:
    return f"""
services:
  main:
    image: {IMAGE}
    restart: unless-stopped
x-edgefleet:
  app: {app}
  version: {version}
  architectures: {architectures}
  services:
    main:
      resources: {{memory: 64m, cpus: 0.5, pids: 64}}
"""


@dataclass
class Publisher:
    """A publisher's key directory and its repository on a test hub (through `fleet`).

    A team (`Publisher.team`) has a key directory of one delegated role instead: the same
    build, sign and publish push its role's targets, once the targets holders delegated to it.
    """

    fleet: Any
    tmp: Path
    keys: Path
    pushed: list[dict[str, Any]] = field(default_factory=list)
    role: str = "targets"

    @classmethod
    def create(cls, fleet: Any, tmp: Path, *, threshold: int = 1) -> Publisher:
        keys = tmp / "publisher-keys"
        init_keys(keys, threshold=threshold)
        publisher = cls(fleet=fleet, tmp=tmp, keys=keys)
        publisher.push_root(publisher.signed_root())
        return publisher

    @classmethod
    def team(cls, fleet: Any, tmp: Path, role: str = "sensor-team", *, threshold: int = 1) -> Publisher:
        """A team's own key directory for the delegated role `role` (nothing pushed yet)."""
        init_delegated_keys(tmp / role / "keys", role, threshold=threshold)
        return cls(fleet=fleet, tmp=tmp / role, keys=tmp / role / "keys", role=role)

    def delegate(self, team: Publisher, *apps: str) -> Any:
        """Delegate `apps` to the team's role with its public keys, and push the targets."""
        found = load_delegated(team.keys)
        assert found is not None
        metadata = delegate(self.keys, found[0], found[1], apps, now=datetime.now(UTC))
        return self.push_targets(metadata.to_dict())

    def revoke(self, role: str) -> Any:
        return self.push_targets(revoke(self.keys, role, now=datetime.now(UTC)).to_dict())

    def online_keys(self) -> dict[str, Any]:
        raw = self.fleet.call("GET", "/repository/online-keys").json()
        return {role: key_from_wire(data) for role, data in raw.items()}

    def signed_root(self, *, version: int = 1) -> Metadata[Any]:
        root = make_root(load_index(self.keys), self.online_keys(), now=datetime.now(UTC), version=version)
        return sign_root(root, load_signers(self.keys, "root"))

    def push_root(self, root: Metadata[Any]) -> None:
        response = self.fleet.call("POST", "/repository/root", json=root.to_dict())
        assert response.status_code == 201, response.text
        save_root(self.keys, root)

    def rotate(self, role: Role, **kwargs: Any) -> Rotation:
        def push(kind: str, body: dict[str, Any]) -> None:
            response = self.fleet.call("POST", f"/repository/{kind}", json=body)
            assert response.status_code == 201, response.text

        return rotate(self.keys, role, push, now=datetime.now(UTC), **kwargs)

    def build(
        self,
        app: str = "sensor",
        version: str = "1.0.0",
        *,
        bundle: bool = False,
        text: str | None = None,
        exporter: Exporter | None = None,
        **kwargs: Any,
    ) -> Path:
        """A build directory; `bundle` bundles stand-in archives, `exporter` real ones (`RegistryClient.export`)."""
        app_dir = self.tmp / f"app-{app}-{version}"
        app_dir.mkdir(parents=True, exist_ok=True)
        (app_dir / "compose.yaml").write_text(text if text is not None else compose(app, version, **kwargs))
        out = self.tmp / f"build-{app}-{version}"
        build(app_dir, out, exporter=exporter or (fake_oci_archive if bundle else None))
        return out

    def sign(self, build_dir: Path) -> dict[str, Any]:
        metadata: Metadata[Targets] = sign(build_dir, self.keys, now=datetime.now(UTC))
        return metadata.to_dict()

    def upload(self, build_dir: Path) -> None:
        release = json.loads((build_dir / "release.json").read_text())
        for name in release["files"].values():
            data = (build_dir / name).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            response = self.fleet.call("PUT", f"/repository/artifacts/{digest}", content=data)
            assert response.status_code == 201, response.text

    def push_targets(self, targets: dict[str, Any]) -> Any:
        path = "/repository/targets" if self.role == "targets" else f"/repository/targets/{self.role}"
        return self.fleet.call("POST", path, json=targets)

    def publish(self, app: str = "sensor", version: str = "1.0.0", **kwargs: Any) -> dict[str, Any]:
        build_dir = self.build(app, version, **kwargs)
        targets = self.sign(build_dir)
        self.upload(build_dir)
        response = self.push_targets(targets)
        assert response.status_code == 201, response.text
        self.pushed.append(targets)
        return targets


@dataclass
class Device:
    """An enrolled test device with its own trust store, verifying through the agent's library."""

    fleet: Any
    identity: LocalIdentity
    state: Path
    arch: str = "arm64"

    @classmethod
    def enroll(cls, fleet: Any, tmp: Path) -> Device:
        identity = fleet.enroll()
        device = cls(fleet=fleet, identity=identity, state=tmp / f"state-{identity.device_id[:8]}")
        client = fleet.device_client()
        repository_root, director_root = client.tuf_roots(identity)
        device.trust.bootstrap(repository_root=repository_root, director_root=director_root)
        return device

    @property
    def id(self) -> str:
        return self.identity.device_id

    @property
    def trust(self) -> TrustStore:
        return TrustStore(self.state / "tuf")

    @property
    def apps(self) -> Path:
        return self.state / "apps"

    def verifier(self, fetcher: Any = None) -> ReleaseVerifier:
        client = self.fleet.device_client()
        return ReleaseVerifier(
            hub_url=client.base_url,
            trust=self.trust,
            fetcher=fetcher or client.fetcher(self.identity),
            device_id=self.id,
            arch=self.arch,
        )

    def update(self, app: str = "sensor", *, installed: int | None = None, fetcher: Any = None) -> VerifiedRelease:
        install = self.apps / app / f"candidate-{len(list(self.apps.glob(f'{app}/*'))) if self.apps.exists() else 0}"
        return self.verifier(fetcher).verify(app, installed_counter=installed, install_dir=install)

    def installed_files(self) -> list[Path]:
        return sorted(p for p in self.apps.rglob("*") if p.is_file()) if self.apps.exists() else []


def assign(fleet: Any, device_id: str, release: str, *, rollback: bool = False) -> Any:
    app, _, version = release.partition("@")
    return fleet.call(
        "POST", f"/devices/{device_id}/assignments", json={"app": app, "version": version, "rollback": rollback}
    )


class Tamper(FetcherInterface):
    """A man in the middle (or a compromised hub): rewrites answers whose URL matches a pattern.

    With `replay`, the answer is the rule's alone: the real one is never asked for (it may not exist).
    """

    def __init__(
        self,
        inner: FetcherInterface,
        rules: dict[str, Callable[[bytes], bytes | Iterator[bytes]]],
        *,
        replay: bool = False,
    ) -> None:
        self.inner = inner
        self.rules = rules
        self.replay = replay
        self.hits: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        for pattern, rewrite in self.rules.items():
            if re.search(pattern, url):
                self.hits.append(url)
                result = rewrite(b"" if self.replay else b"".join(self.inner.fetch(url)))
                return iter([result]) if isinstance(result, bytes) else result
        return self.inner.fetch(url)


def endless(_original: bytes) -> Iterator[bytes]:
    """An answer that never ends (endless-data attack)."""
    return itertools.repeat(b"x" * 65536)


def resign(raw: bytes, signer: Signer, change: Callable[[dict[str, Any]], None] | None = None) -> bytes:
    """Metadata `raw` with `change` applied to its signed part and one signature by `signer`."""
    data = json.loads(raw)
    if change is not None:
        change(data["signed"])
    metadata: Metadata[Any] = Metadata.from_dict(data)
    metadata.sign(signer)
    return json.dumps(metadata.to_dict()).encode()
