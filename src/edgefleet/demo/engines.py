"""The container engine a demo (or a test bench) starts for its agents: Podman's API service or a dockerd of its own.

Each is started as a child in a directory of the caller's and answers on a socket there:
`podman system service` (the machine's Podman storage, with the caller's registries file),
or `dockerd` with its own data root, exec root and pid file, no default bridge and an
address pool of the caller's choosing, so it meets no other engine's networks. Every
dockerd on a machine shares iptables' chains, and two that start at once race to create
them: `dockerd_start_lock` keeps starts apart (any process that starts one should hold it).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

EngineName = Literal["podman", "docker"]
ENGINE_NAMES: tuple[EngineName, ...] = ("podman", "docker")
PODMAN = "/usr/bin/podman"
DOCKERD = "/usr/sbin/dockerd"
DOCKERD_START_LOCK = Path("/tmp/edgefleet-dockerd-start.lock")  # noqa: S108  # one lock for every process here


def installed() -> list[EngineName]:
    """The engines this machine has, Podman first."""
    paths: dict[EngineName, str] = {"podman": PODMAN, "docker": DOCKERD}
    return [name for name in ENGINE_NAMES if Path(paths[name]).exists()]


@contextmanager
def dockerd_start_lock() -> Iterator[None]:
    """Held while one dockerd starts (until it answers): its iptables chains are created then."""
    with DOCKERD_START_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True, slots=True)
class EngineCommand:
    """How to start one engine, where it will answer, and what to remove once it has stopped."""

    name: EngineName
    argv: list[str]
    socket: Path
    leftovers: tuple[Path, ...] = ()

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


def podman_command(root: Path) -> EngineCommand:
    """Podman's Docker-compatible API service on ROOT/podman.sock."""
    socket = root / "podman.sock"
    return EngineCommand("podman", [PODMAN, "system", "service", "--time=0", f"unix://{socket}"], socket)


def dockerd_command(root: Path, *, exec_root: Path, address_pool: str) -> EngineCommand:
    """A dockerd answering on ROOT/docker.sock, its images and containers under ROOT/docker.

    Args:
        root: where its socket, data and pid file go.
        exec_root: its runtime state (unix sockets inside: keep the path short, e.g. under /tmp).
        address_pool: networks it hands out, ``base=10.N.0.0/16,size=24``.
    """
    socket = root / "docker.sock"
    argv = [
        DOCKERD,
        *("--host", f"unix://{socket}", "--data-root", str(root / "docker"), "--exec-root", str(exec_root)),
        *("--pidfile", str(root / "docker.pid"), "--bridge=none", "--default-address-pool", address_pool),
    ]
    return EngineCommand("docker", argv, socket, leftovers=(root / "docker", exec_root))


def remove_leftovers(command: EngineCommand) -> None:
    """After the engine stopped: what it mounted and wrote (dockerd bind-mounts its data root onto itself)."""
    for path in command.leftovers:
        subprocess.run(["umount", "-R", "-l", str(path)], check=False, capture_output=True)  # noqa: S603, S607
        shutil.rmtree(path, ignore_errors=True)
