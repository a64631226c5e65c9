"""Agent settings: a TOML file (``/etc/edgefleet/agent.toml``), then command-line flags, then defaults.

Every bound the agent keeps is here: the long-poll wait, backoff and request timeout at the top,
the rest (download, report, journal and outbox sizes, update deadlines, the free disk kept) in
the ``[bounds]`` table (`agent.bounds`)::

    hub_url = "https://hub.example.com:8443"
    ca = "/etc/edgefleet/ca.crt"
    enrollment_token = "efe_..."          # used once, at first start
    data_dir = "/var/lib/edgefleet"
    engine = "unix:///run/podman/podman.sock"
    policy = "/etc/edgefleet/policy.toml"
    repository_root = "/etc/edgefleet/root.json"   # the publisher's root, provisioned with the device image
    # repository_root_sha256 = "..."              # or its digest (edgefleet keys root-digest), given out of band
    # trust_first_root = true                      # or neither: take the hub's root on first use (demos only)

    [bounds]
    disk_reserve = 268435456                     # bytes left free on the engine's storage beyond new images

One of the three is needed before a device's first start (`agent.trust`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgefleet.agent.bounds import Bounds
from edgefleet.agent.errors import AgentConfigError as AgentConfigError
from edgefleet.agent.trust import RootPin
from edgefleet.protocol import Arch

DEFAULT_CONFIG = Path("/etc/edgefleet/agent.toml")
MAX_CONFIG_BYTES = 64 * 1024


class AgentSettings(BaseModel):
    """Configuration of one agent process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hub_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    ca: Path | None = None
    enrollment_token: str | None = Field(default=None, max_length=256)
    data_dir: Path = Path("/var/lib/edgefleet")
    engine: str = "unix:///run/podman/podman.sock"
    engine_namespace: str = Field(default="", pattern=r"^[a-z0-9]{0,16}$")
    """Prefixes the names of containers, networks and volumes, for several agents on one engine (demos, tests)."""
    policy: Path = Path("/etc/edgefleet/policy.toml")
    repository_root: Path | None = None
    """The image repository's root to trust, a file provisioned with the device (the publisher's root.json)."""
    repository_root_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """Or the digest of that root (`agent.trust.root_digest`), given at enrollment out of band."""
    trust_first_root: bool = False
    """Neither: take the hub's root on first use (it is then reported as not pinned)."""
    arch: Arch | None = None
    poll_wait: float = Field(default=60.0, ge=0, le=900)
    """Seconds the hub may hold a target-state poll."""
    backoff_initial: float = Field(default=1.0, gt=0, le=60)
    backoff_max: float = Field(default=300.0, gt=0, le=3600)
    request_timeout: float = Field(default=30.0, gt=0, le=300)
    bounds: Bounds = Bounds()
    """Every other limit and timing of the agent: the ``[bounds]`` table (`agent.bounds`)."""
    config_file: Path | None = Field(default=None, exclude=True)
    """The file these settings were read from (set by `load_settings`, not by the file)."""

    @model_validator(mode="before")
    @classmethod
    def _older_spelling(cls, data: Any) -> Any:
        """``disk_reserve`` at the top, as agents before ``[bounds]`` read it, is ``bounds.disk_reserve``."""
        if isinstance(data, dict) and "disk_reserve" in data:
            data = dict(data)
            bounds = data.get("bounds", {})
            if not isinstance(bounds, dict) or "disk_reserve" in bounds:
                raise ValueError("disk_reserve is given twice: keep the one in [bounds]")
            data["bounds"] = {**bounds, "disk_reserve": data.pop("disk_reserve")}
        return data

    def own_paths(self) -> list[Path | str | None]:
        """The agent's own files and its engine's socket: never shared with a container (`agent.hostpaths`)."""
        socket = self.engine.removeprefix("unix://") if self.engine.startswith("unix://") else None
        return [self.data_dir, self.policy, self.ca, self.repository_root, self.config_file, socket]

    def root_pin(self) -> RootPin:
        """What this device was provisioned with to trust the image repository's root.

        Raises:
            AgentConfigError: the pinned root file cannot be read.
        """
        root = None
        if self.repository_root is not None:
            try:
                root = self.repository_root.read_bytes()
            except OSError as exc:
                raise AgentConfigError(f"repository_root: cannot read {self.repository_root}: {exc.strerror}") from exc
        return RootPin(root=root, sha256=self.repository_root_sha256, first_use=self.trust_first_root)


def load_settings(path: Path | None, overrides: dict[str, Any]) -> AgentSettings:
    """Settings from the file at `path` (if it exists or was named) with non-None `overrides` on top.

    Raises:
        AgentConfigError: unreadable or invalid, naming the file and the field.
    """
    data: dict[str, Any] = {}
    source = path or DEFAULT_CONFIG
    if path is not None or source.exists():
        try:
            raw = source.read_bytes()
            if len(raw) > MAX_CONFIG_BYTES:
                raise AgentConfigError(f"{source}: larger than {MAX_CONFIG_BYTES} bytes")
            data = tomllib.loads(raw.decode())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise AgentConfigError(f"{source}: {exc}") from exc
    data.update({key: value for key, value in overrides.items() if value is not None})
    data["config_file"] = source if source.exists() else None
    try:
        return AgentSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "config"
        raise AgentConfigError(f"{source}: {where}: {first.get('msg', 'invalid')}") from exc
