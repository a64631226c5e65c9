"""What every update strategy must do, step by step: one set of checks for the in-memory engine and the real ones.

`tests/unit/agent/test_transaction.py` runs them on `MemoryEngine`, and
`tests/integration/agent/test_transaction.py` on Podman and Docker Engine, through an engine
that records the steps it carried out (`Recorded`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgefleet.agent.plan import (
    CreateContainer,
    FetchImage,
    RemoveContainer,
    StartContainer,
    Step,
    StopContainer,
)
from edgefleet.agent.spec import ContainerSpec

STRATEGIES = ("download-then-kill", "kill-then-download", "hand-over")


def bare_spec(**fields: Any) -> ContainerSpec:
    """A container definition with nothing set but FIELDS (app, service, release and image at least)."""
    empty: dict[str, Any] = {
        "command": None,
        "entrypoint": None,
        "environment": (),
        "labels": (),
        "egress": False,
        "ports": (),
        "mounts": (),
        "devices": (),
        "device_cgroup_rules": (),
        "cap_add": (),
        "memory": 0,
        "nano_cpus": 0,
        "pids": 0,
        "restart_max": 0,
        "health": None,
        "depends_on": (),
    }
    return ContainerSpec(**(empty | fields))


class Recorded:
    """An engine that records every step it carries out (`done`), and is otherwise the engine it wraps."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.done: list[Step] = []

    def execute(self, step: Step, specs: Mapping[tuple[str, str], ContainerSpec]) -> None:
        self.engine.execute(step, specs)
        self.done.append(step)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


ContainerStep = type[StartContainer] | type[StopContainer] | type[RemoveContainer]


def services(steps: Sequence[Step], kind: ContainerStep) -> list[str]:
    """The services of the steps of `kind`, in order."""
    return [step.service for step in steps if isinstance(step, kind)]


def first(steps: Sequence[Step], kind: type) -> int:
    return next((i for i, step in enumerate(steps) if isinstance(step, kind)), len(steps))


def check_commit(done: Sequence[Step], strategy: str, order: Sequence[str]) -> None:
    """A committed update of the services `order` (in depends_on order), every one of them changed."""
    starts = services(done, StartContainer)
    assert starts == list(order), done  # the new ones in depends_on order
    assert services(done, RemoveContainer) == list(reversed(order)), done  # the old ones, dependents first
    stops = services(done, StopContainer)
    if strategy == "hand-over":
        assert stops == [], done  # the old ones ran until the commit, beside the new
        assert first(done, RemoveContainer) > max(i for i, s in enumerate(done) if isinstance(s, StartContainer))
        return
    assert stops == list(reversed(order)), done  # dependents stop first
    if strategy == "kill-then-download":
        assert first(done, StopContainer) < min(first(done, FetchImage), first(done, CreateContainer)), done
    else:
        staged = [i for i, step in enumerate(done) if isinstance(step, FetchImage | CreateContainer)]
        assert max(staged) < first(done, StopContainer), done  # fetched and created before anything stops
        assert first(done, StopContainer) < first(done, StartContainer), done


def check_rollback(done: Sequence[Step], order: Sequence[str]) -> None:
    """A rollback of an update of the services `order`: the new ones go, dependents first; the old ones start."""
    rollback = done[first(done, RemoveContainer) :]
    assert services(rollback, RemoveContainer) == list(reversed(order)), done
    assert services(rollback, StartContainer) == list(order), done
