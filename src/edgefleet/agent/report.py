"""The device's state report: its apps as `protocol.ReportedState` has them, and whether it is worth sending (pure).

An agent at rest repeats the same report every cycle: the same releases, services, engine
and agent. Sent anyway it costs the device's link a report and the hub's full twin back,
and the device's storage two writes. It is sent when something in it changed; the free disk
and memory figures, which move all the time, count as changed when they moved by more than
their share (`volatile`); and at least every `Bounds.report_refresh` seconds, so that the twin's figures
are never older than that. The first report after the agent starts is always sent.

The agent and the simulator state their apps the same way (`app_reports`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.decide import Installed
from edgefleet.protocol import APP_NAME_PATTERN, MAX_APPS, AppReport

log = logging.getLogger(__name__)


def volatile(bounds: Bounds = DEFAULT_BOUNDS) -> dict[str, float]:
    """Figures that change all the time -> the share of their last reported value they must move by to count."""
    return {"disk_free": bounds.report_disk_share, "mem_available": bounds.report_memory_share}


def report_due(
    properties: Mapping[str, Any],
    last: Mapping[str, Any] | None,
    *,
    last_at: float | None,
    now: float,
    bounds: Bounds = DEFAULT_BOUNDS,
) -> bool:
    """Whether `properties` should go to the hub, given the `last` report it took (at `last_at`, clock of `now`)."""
    if last is None or last_at is None or now - last_at >= bounds.report_refresh:
        return True
    shares = volatile(bounds)
    if {key: value for key, value in properties.items() if key not in shares} != {
        key: value for key, value in last.items() if key not in shares
    }:
        return True
    return any(_moved(properties.get(key), last.get(key), share) for key, share in shares.items())


def _moved(new: object, old: object, share: float) -> bool:
    """A figure moved by more than `share` of its old value (appearing or going counts as moved)."""
    if not isinstance(new, int | float) or not isinstance(old, int | float):
        return new != old
    return abs(new - old) > share * abs(old)


def app_reports(
    installed: Mapping[str, Installed], services: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> dict[str, AppReport]:
    """Per app: the release installed and its services as the engine describes them (`DockerEngine.status`).

    An entry the hub would refuse (a container whose labels name no valid app or service, an
    app past the 64 a report holds: installed ones come first) is left out and logged: one odd
    container must not cost the device its whole report.
    """
    apps: dict[str, AppReport] = {}
    names = sorted(installed) + sorted(set(services) - set(installed))
    if len(names) > MAX_APPS:
        log.warning("reporting %d of %d apps: %s left out", MAX_APPS, len(names), ", ".join(names[MAX_APPS:])[:200])
    for app in sorted(names[:MAX_APPS]):
        if re.fullmatch(APP_NAME_PATTERN, app) is None:
            log.warning("not reporting containers of %r: not an app name", app)
            continue
        fields: dict[str, Any] = {}
        if (entry := installed.get(app)) is not None:
            fields = {"version": entry.version, "release_counter": entry.release_counter}
        if described := services.get(app, {}):
            fields["services"] = described
        try:
            apps[app] = AppReport.model_validate(fields)  # once per app and cycle: the usual case
            continue
        except ValidationError:
            pass
        if described:  # something in it is odd: leave out the services that are, keep the rest
            fields.pop("services")
            if kept := {name: service for name, service in described.items() if _valid(app, name, service)}:
                fields["services"] = kept
        try:
            apps[app] = AppReport.model_validate(fields)
        except ValidationError as exc:
            log.warning("not reporting app %s: %s", app, exc.errors(include_url=False)[:1])
    return apps


def _valid(app: str, name: str, service: Mapping[str, Any]) -> bool:
    """Whether one service's description would pass the hub (logged when not)."""
    try:
        AppReport.model_validate({"services": {name: service}})
    except ValidationError as exc:
        log.warning("not reporting %s/%r: %s", app, name, exc.errors(include_url=False)[:1])
        return False
    return True
