"""The device owner's permission policy: which permissions releases may use on this device.

A TOML file outside any release (``/etc/edgefleet/policy.toml`` by default)::

    allow = ["network", "network-bind:8080", "serial-port:/dev/ttyUSB0", "camera"]
    deny = ["host-write:*"]

A permission is granted only if an `allow` entry matches it and no `deny` entry does
(deny wins). An entry is a permission string, or a kind with ``:*`` for any argument of
that kind. Nothing is allowed by default (snap-style: plugs are denied unless connected).
Checking is pure: a release and a policy in, the refusals out. Whatever a policy says,
`host-read`/`host-write` of a denied host path (`manifest.host_path_problem`, with this
device's own paths added) is refused: the device checks the canonical path itself rather
than trust the signed manifest.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.errors import PolicyError as PolicyError
from edgefleet.manifest import Permission, Release, canonical_path, host_path_problem, parse_permission

ARGUMENT_KINDS = ("network-bind", "serial-port", "gpio", "i2c", "host-read", "host-write")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A permission a release asked for that the policy does not grant."""

    service: str
    permission: str
    reason: str = "not granted by this device's policy"


@dataclass(frozen=True, slots=True)
class Policy:
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()

    def grants(self, permission: Permission) -> bool:
        def matches(entries: frozenset[str]) -> bool:
            return str(permission) in entries or f"{permission.kind}:*" in entries

        return matches(self.allow) and not matches(self.deny)


def _entry(text: object) -> str:
    if not isinstance(text, str):
        raise PolicyError(f"policy entries are strings, got {text!r}")
    kind, sep, arg = text.partition(":")
    if sep and arg == "*":
        if kind not in ARGUMENT_KINDS:
            raise PolicyError(f"policy entry {text!r}: {kind} takes no argument to match")
        return text
    try:
        return str(parse_permission(text))
    except ValueError as exc:
        raise PolicyError(f"policy entry {text!r}: {exc}") from exc


def parse_policy(text: str, *, source: str = "policy.toml", bounds: Bounds = DEFAULT_BOUNDS) -> Policy:
    """Parse a policy file's text (at most `Bounds.policy_bytes`, `Bounds.policy_entries` per list).

    Raises:
        PolicyError: too large, not TOML, unknown keys, or entries that are not permissions.
    """
    if len(text.encode()) > bounds.policy_bytes:
        raise PolicyError(f"{source}: larger than {bounds.policy_bytes} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
    unknown = set(data) - {"allow", "deny"}
    if unknown:
        raise PolicyError(f"{source}: unknown keys: {', '.join(sorted(unknown))}")
    lists = {key: data.get(key, []) for key in ("allow", "deny")}
    for key, entries in lists.items():
        if not isinstance(entries, list) or len(entries) > bounds.policy_entries:
            raise PolicyError(f"{source}: {key} must be a list of at most {bounds.policy_entries} permissions")
    return Policy(allow=frozenset(_entry(e) for e in lists["allow"]), deny=frozenset(_entry(e) for e in lists["deny"]))


def load_policy(path: Path, bounds: Bounds = DEFAULT_BOUNDS) -> Policy:
    """The policy at `path`; a missing file is the empty policy (nothing granted).

    Raises:
        PolicyError: unreadable, too large or malformed.
    """
    try:
        with path.open("rb") as file:
            raw = file.read(bounds.policy_bytes + 1)  # no more than the bound, whatever the file holds
        if len(raw) > bounds.policy_bytes:
            raise PolicyError(f"{path}: larger than {bounds.policy_bytes} bytes")
        return parse_policy(raw.decode(), source=str(path), bounds=bounds)
    except FileNotFoundError:
        return Policy()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc


def _host_path_problem(permission: Permission, protected: tuple[str, ...]) -> str | None:
    if permission.kind not in ("host-read", "host-write"):
        return None
    try:
        return host_path_problem(canonical_path(permission.arg or ""), protected=protected)
    except ValueError as exc:
        return str(exc)


def refusals(release: Release, policy: Policy, *, protected: tuple[str, ...] = ()) -> list[Refusal]:
    """Every (service, permission) of the release this device refuses; empty means go.

    Args:
        release: the verified release.
        policy: the device owner's grants.
        protected: this device's own paths (agent state, configuration, engine socket), canonical:
            never shared, whatever the policy says.
    """
    found = []
    for service in release.services:
        for permission in service.policy.permissions:
            problem = _host_path_problem(permission, protected)
            if problem is not None:
                found.append(Refusal(service.name, str(permission), problem))
            elif not policy.grants(permission):
                found.append(Refusal(service.name, str(permission)))
    return found
