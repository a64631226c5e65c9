"""The agent's last check of a host path before the engine bind-mounts it: canonical, symlinks resolved, denied refused.

A signed manifest is not enough: the manifest parser refuses denied host paths at build, at
the hub and on the device, and the agent checks again right before a container is created,
with what only the device knows: where symlinks on this host really lead, and its own
paths (agent state, configuration, policy, the engine's socket and data root). Both the path
as written and the path it resolves to must pass (`manifest.host_path_problem`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from edgefleet.manifest import canonical_path, host_path_problem


def protected_paths(paths: Iterable[str | os.PathLike[str] | None]) -> tuple[str, ...]:
    """The canonical, symlink-resolved form of each of this device's own paths (None and relative ones skipped)."""
    found: list[str] = []
    for path in paths:
        if path is None:
            continue
        text = os.fspath(path)
        if not os.path.isabs(text):
            text = os.path.abspath(text)
        for spelling in (text, os.path.realpath(text)):
            try:
                found.append(canonical_path(spelling))
            except ValueError:
                continue
    return tuple(dict.fromkeys(found))


def bind_problem(
    path: str, *, protected: tuple[str, ...] = (), resolve: Callable[[str], str] = os.path.realpath
) -> str | None:
    """Why the host path `path` must not be bind-mounted here (None: it may).

    Args:
        path: the host side of a bind mount, as the container spec names it.
        protected: this device's own paths (`protected_paths`).
        resolve: follows symlinks on this host (`os.path.realpath`).
    """
    try:
        written = canonical_path(path)
    except ValueError as exc:
        return f"{path!r}: {exc}"
    problem = host_path_problem(written, protected=protected)
    if problem is not None:
        return problem
    try:
        real = canonical_path(resolve(written))
    except (OSError, ValueError) as exc:
        return f"{written}: cannot resolve: {exc}"
    if real != written:
        problem = host_path_problem(real, protected=protected)
        if problem is not None:
            return f"{written} leads to {real}: {problem}"
    return None
