"""Which apps an update moves: the agent's choices from a verified assignment, as a pure function.

`Agent.update` (`agent.runner`) and the simulated device (`sim.work`) both decide with
`choose_updates`: an app already on the assigned release stays (and a failure before that is
settled); a release that failed on this device is not tried again until something else is
assigned or an operator asks for a retry (a new `release_mark`); apps no longer assigned go.
How each chosen app then moves is `agent.plan.plan_update`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edgefleet.releases import DirectorTarget


@dataclass(frozen=True)
class Installed:
    """A verified release the device keeps on disk, per app."""

    version: str
    release_counter: int
    directory: str
    previous: str | None = None
    """Directory of the release that ran before, kept with its images (going back to it pulls no image)."""


def release_mark(counter: int, version: str, retry: int) -> str:
    """Names one assignment of a release: an operator's retry makes a new mark for the same release."""
    return f"{counter}-{version}" + (f"-retry{retry}" if retry else "")


@dataclass(frozen=True, slots=True)
class Choices:
    """What to do with a verified assignment."""

    update: tuple[str, ...]
    """Apps to verify and move to their assigned release, in this order."""
    staying: tuple[str, ...]
    """Apps kept on their release because the assigned one failed here before."""
    failed: dict[str, str]
    """App -> mark of an assigned release that failed here (kept until something else is assigned)."""
    removed: tuple[str, ...]
    """Installed apps that are no longer assigned."""


def choose_updates(
    assigned: Mapping[str, DirectorTarget], installed: Mapping[str, Installed], failed: Mapping[str, str]
) -> Choices:
    """Decide from the director's verified targets, what is installed, and what failed here (pure)."""
    still_failed = {app: mark for app, mark in failed.items() if app in assigned}
    update: list[str] = []
    staying: list[str] = []
    for app, target in sorted(assigned.items()):
        mark = release_mark(target.release_counter, target.version, target.retry)
        current = installed.get(app)
        if current and (current.version, current.release_counter) == (target.version, target.release_counter):
            still_failed.pop(app, None)
            continue
        if still_failed.get(app) == mark:
            staying.append(app)
            continue
        still_failed.pop(app, None)
        update.append(app)
    return Choices(
        update=tuple(update),
        staying=tuple(staying),
        failed=still_failed,
        removed=tuple(sorted(set(installed) - set(assigned))),
    )
