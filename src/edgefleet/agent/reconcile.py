"""One reconcile: observe the engine, plan against the verified releases, carry the steps out in order.

The deciding part is `agent.plan.plan` (pure); this module only joins it to an engine. A
release whose permissions the device's policy does not grant is refused before any step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgefleet.agent.errors import PermissionRefusedError as PermissionRefusedError
from edgefleet.agent.plan import AppTarget, Observed, Step, plan
from edgefleet.agent.policy import Policy, Refusal, refusals
from edgefleet.agent.spec import ContainerSpec, HostFacts, release_specs
from edgefleet.manifest import Release

Specs = dict[tuple[str, str], ContainerSpec]


class Engine(Protocol):
    """The port the reconciler drives (`agent.engine.docker.DockerEngine` is the real one)."""

    bundles: dict[str, Path]
    """Image -> verified OCI archive to load instead of pulling."""

    def observe(self, images: frozenset[str] = frozenset()) -> Observed: ...

    def execute(self, step: Step, specs: Mapping[tuple[str, str], ContainerSpec]) -> None: ...


def describe_refusals(refused: list[Refusal]) -> str:
    """``SERVICE: PERMISSION (why)``, grouped by reason."""
    reasons = dict.fromkeys(r.reason for r in refused)
    return "; ".join(
        ", ".join(f"{r.service}: {r.permission}" for r in refused if r.reason == reason) + f" ({reason})"
        for reason in reasons
    )


@dataclass(frozen=True)
class Desired:
    """What the device must run: per app a verified release, plus the facts specs depend on."""

    releases: Mapping[str, Release]
    policy: Policy
    facts: HostFacts
    environment: Mapping[str, str]


def checked_specs(
    release: Release, policy: Policy, *, facts: HostFacts, environment: Mapping[str, str]
) -> tuple[ContainerSpec, ...]:
    """The release's containers, once the policy grants everything it asks for.

    Raises:
        PermissionRefusedError: a permission the policy does not grant.
    """
    refused = refusals(release, policy, protected=facts.protected_paths)
    if refused:
        raise PermissionRefusedError(release.app, refused, describe_refusals(refused))
    return release_specs(release, facts=facts, environment=dict(environment))


def targets(desired: Desired) -> tuple[dict[str, AppTarget], Specs]:
    """The planner's targets and the container definitions behind them.

    Raises:
        PermissionRefusedError: a release needs a permission the policy does not grant.
    """
    apps: dict[str, AppTarget] = {}
    specs: Specs = {}
    for app, release in sorted(desired.releases.items()):
        made = checked_specs(release, desired.policy, facts=desired.facts, environment=desired.environment)
        for spec in made:
            specs[(app, spec.service)] = spec
        apps[app] = AppTarget(
            app=app,
            release=release.version,
            services=tuple(s.target() for s in made),
            volumes=release.volumes,
        )
    return apps, specs


def plan_for(engine: Engine, desired: Desired) -> tuple[tuple[Step, ...], Specs]:
    """Observe and plan, without acting (`edgefleet agent plan`)."""
    apps, specs = targets(desired)
    images = frozenset(spec.image for spec in specs.values())
    return plan(engine.observe(images), apps), specs


def reconcile(engine: Engine, desired: Desired, *, on_step: Callable[[Step], None] | None = None) -> tuple[Step, ...]:
    """Bring the engine to `desired`; returns the steps taken (none when already there).

    Raises:
        PermissionRefusedError: before any step.
        EngineError: a step failed; later steps were not taken (the next reconcile resumes).
    """
    steps, specs = plan_for(engine, desired)
    for step in steps:
        if on_step is not None:
            on_step(step)
        engine.execute(step, specs)
    return steps
