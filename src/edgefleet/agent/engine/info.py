"""Which engine answers on the agent's socket, and its versions: decided from the engine's own answer (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

EngineKind = Literal["docker", "podman", "balena-engine"]


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """Which engine answers on the socket, and its versions (reported in the device's twin)."""

    kind: EngineKind
    version: str
    api_version: str
    root_dir: str

    def as_report(self) -> dict[str, str]:
        return {"kind": self.kind, "version": self.version, "api_version": self.api_version}


def api_level(version: str) -> tuple[int, ...]:
    """`1.41` -> (1, 41); anything unreadable is lowest."""
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return (0,)


def engine_kind(version: Mapping[str, Any]) -> EngineKind:
    """Podman, balenaEngine or Docker/Moby, from the engine's version answer (pure)."""
    components = {str(c.get("Name", "")).lower() for c in version.get("Components") or [] if isinstance(c, dict)}
    platform = str((version.get("Platform") or {}).get("Name", "")).lower()
    if any("podman" in name for name in components):
        return "podman"
    if "balena" in platform or any("balena" in name for name in components):
        return "balena-engine"
    return "docker"
