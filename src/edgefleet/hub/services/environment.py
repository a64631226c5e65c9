"""Environment variables operators set per fleet and per device; a device's own override its fleet's.

Operators change them here (operator role; every change audited, names only, since values
may be credentials); viewers read them. The director puts each device's effective
environment into its signed targets and the target-state poll repeats it, so a change
reaches the device on its next poll. Values are not secret from viewers or the device.

Bounds: at most `MAX_VARIABLES` per scope *and* in a device's effective environment (what
`protocol.Environment` allows on the wire), and `MAX_SCOPE_BYTES` of JSON per scope, so a
device's effective environment, repeated in each director target, keeps its director
metadata far below the agent's bound.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.errors import BadRequestError, NotFoundError
from edgefleet.hub.records import Device, EnvScope
from edgefleet.hub.services.audit import record
from edgefleet.hub.services.operators import Operator, authorize, operator_action

MAX_VARIABLES = 128
MAX_SCOPE_BYTES = 16 * 1024
"""Serialized JSON (as stored in director metadata) of one scope's variables."""


@dataclass(frozen=True, slots=True)
class EnvironmentView:
    """The variables set at one scope; for a device also its fleet's, which it inherits."""

    scope: EnvScope
    fleet: str
    device_id: str | None
    values: dict[str, str]
    fleet_values: dict[str, str]

    @property
    def effective(self) -> dict[str, str]:
        return overlay(self.fleet_values, self.values)


def overlay(fleet: Mapping[str, str], device: Mapping[str, str]) -> dict[str, str]:
    """A device's effective environment: its fleet's variables overlaid by its own, in name order."""
    merged = {**fleet, **device}
    return {name: merged[name] for name in sorted(merged)}


def effective_for(tx: Tx, device: Device) -> dict[str, str]:
    """The device's effective environment as stored now (inside the caller's transaction)."""
    return overlay(*tx.environments_of(device.fleet, device.id))


def plan_change(
    current: Mapping[str, str], *, set_values: Mapping[str, str], unset: Sequence[str], where: str
) -> dict[str, str]:
    """The scope's variables after setting `set_values` and removing `unset` (pure).

    Args:
        current: the variables set at the scope now.
        set_values: names and values to set (names already valid, see `protocol.EnvName`).
        unset: names to remove; each must be set now.
        where: the scope, for messages ("fleet f1", "device ...").

    Raises:
        BadRequestError: nothing to do, a name both set and unset, a value no process
            environment can hold, or a bound passed.
        NotFoundError: a name to unset is not set.
    """
    if not set_values and not unset:
        raise BadRequestError("empty_change", "nothing to set or unset")
    both = sorted(set(set_values) & set(unset))
    if both:
        raise BadRequestError("conflicting_change", f"set and unset both name {', '.join(both)[:200]}")
    missing = sorted(set(unset) - set(current))
    if missing:
        raise NotFoundError("variable_not_set", f"{', '.join(missing)[:200]} is not set on {where}")
    for name, value in set_values.items():
        _check_value(name, value)
    values = {name: value for name, value in current.items() if name not in unset}
    values.update(set_values)
    if len(values) > MAX_VARIABLES:
        raise BadRequestError(
            "too_many_variables", f"{where} would have {len(values)} variables; at most {MAX_VARIABLES}"
        )
    if len(json.dumps(values)) > MAX_SCOPE_BYTES:
        raise BadRequestError(
            "environment_too_large", f"{where}'s variables would exceed {MAX_SCOPE_BYTES} bytes of JSON"
        )
    return dict(sorted(values.items()))


def _check_value(name: str, value: str) -> None:
    # A process environment is C strings (no NUL); PostgreSQL text refuses NUL and lone surrogates.
    if "\x00" in value:
        raise BadRequestError("invalid_value", f"{name}: values must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError("invalid_value", f"{name}: values must be valid Unicode text") from exc


def _where(scope: EnvScope, owner: str) -> str:
    return f"{scope} {owner}"


def _fleet_of(tx: Tx, scope: EnvScope, owner: str) -> str:
    if scope == "fleet":
        return owner
    device = tx.get_device(owner)
    if device is None:
        raise NotFoundError("device_not_found", f"no device {owner}")
    return device.fleet


def _view(tx: Tx, scope: EnvScope, owner: str) -> EnvironmentView:
    fleet = _fleet_of(tx, scope, owner)
    fleet_values = tx.get_environment("fleet", fleet)
    if scope == "fleet":
        return EnvironmentView(scope=scope, fleet=fleet, device_id=None, values=fleet_values, fleet_values={})
    values = tx.get_environment("device", owner)
    return EnvironmentView(scope=scope, fleet=fleet, device_id=owner, values=values, fleet_values=fleet_values)


def show(hub: Hub, operator: Operator, scope: EnvScope, owner: str) -> EnvironmentView:
    """The variables of a fleet, or of a device with its fleet's (viewer).

    Raises:
        NotFoundError: no such device (a fleet exists by name: one without variables is empty).
    """
    authorize(operator, "viewer", action=f"{scope}.environment")
    with hub.store.transaction(readonly=True) as tx:
        return _view(tx, scope, owner)


def change(
    hub: Hub,
    operator: Operator,
    scope: EnvScope,
    owner: str,
    *,
    set_values: Mapping[str, str],
    unset: Sequence[str],
) -> EnvironmentView:
    """Set and remove variables of a fleet or a device in one step (operator; audited).

    Args:
        hub: the hub.
        operator: who asks.
        scope: "fleet" or "device".
        owner: the fleet's name or the device's id.
        set_values: names and values to set.
        unset: names to remove (each must be set).

    Raises:
        ForbiddenError: below the operator role.
        NotFoundError: no such device, or a name to unset is not set.
        BadRequestError: see `plan_change`; or a device's effective environment (its
            fleet's and its own) would pass `MAX_VARIABLES`.
    """
    target = f"{scope}:{owner}"
    with operator_action(hub, operator, "operator", action=f"{scope}.environment", target=target) as tx:
        tx.lock_environment()
        before = _view(tx, scope, owner)
        values = plan_change(before.values, set_values=set_values, unset=unset, where=_where(scope, owner))
        _check_effective(tx, before, values)
        tx.delete_environment(scope, owner, unset)
        tx.put_environment(scope, owner, dict(set_values))
        record(
            hub,
            tx,
            actor=operator.actor,
            action=f"{scope}.environment",
            target=target,
            detail={"set": sorted(set_values), "unset": sorted(unset)},
        )
        return _view(tx, scope, owner)


def _check_effective(tx: Tx, before: EnvironmentView, values: Mapping[str, str]) -> None:
    if before.scope == "device":
        count = len(overlay(before.fleet_values, values))
        who = f"device {before.device_id}"
    else:
        count = len(values) + tx.max_device_environment_beyond(before.fleet, list(values))
        who = f"a device of fleet {before.fleet}"
    if count > MAX_VARIABLES:
        raise BadRequestError(
            "too_many_variables",
            f"{who} would have {count} variables with its fleet's and its own; at most {MAX_VARIABLES}",
        )
