"""Delegating an app to a team: the top-level targets name the team's role, its public keys and the app's paths.

The targets key holders run this with their key directory and the team's public keys (the
team's ``keys.json``, written by ``keys init --delegated ROLE``): they never hold the team's
private keys. Each change is a new version of the top-level targets, signed with the targets
keys and recorded in the key directory like a release; the caller pushes it. Delegations are
terminating: a TUF client looking for one of the app's paths searches no role after the
team's, so the team's targets are the only delegated source of that app's releases.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from securesystemslib.signer import Key
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Targets

from edgefleet.protocol import APP_NAME_PATTERN
from edgefleet.publisher.errors import PublisherError
from edgefleet.publisher.keys import RoleKeys
from edgefleet.publisher.state import TARGETS_LIFETIME, load_targets, sign_targets, signing_role
from edgefleet.releases import MAX_DELEGATED_ROLES, MAX_DELEGATION_PATHS, MAX_ROLE_KEYS, app_patterns, role_name_problem

APP_NAME = re.compile(APP_NAME_PATTERN)


class DelegationError(PublisherError):
    """The delegation cannot be made or revoked as asked."""


@dataclass(frozen=True)
class Delegation:
    """One role the top-level targets delegate to."""

    role: str
    paths: tuple[str, ...]
    threshold: int
    keyids: tuple[str, ...]


def delegations(keys_dir: Path) -> list[Delegation]:
    """The delegations in the key directory's targets record, in search order.

    Raises:
        DelegationError: a team's key directory.
        KeyStoreError: unusable record.
    """
    _check_publisher(keys_dir)
    metadata = load_targets(keys_dir)
    if metadata is None or metadata.signed.delegations is None or metadata.signed.delegations.roles is None:
        return []
    return [
        Delegation(
            role=role.name,
            paths=tuple(role.paths or role.path_hash_prefixes or ()),
            threshold=role.threshold,
            keyids=tuple(role.keyids),
        )
        for role in metadata.signed.delegations.roles.values()
    ]


def _check_publisher(keys_dir: Path) -> None:
    role = signing_role(keys_dir)
    if role != Targets.type:
        raise DelegationError(
            f"{keys_dir} holds the keys of the delegated role {role}; delegations are made with the targets keys"
        )


def _next_targets(keys_dir: Path, *, now: datetime, lifetime: timedelta) -> Targets:
    base = load_targets(keys_dir)
    expires = (now + lifetime).replace(microsecond=0)
    if base is None:
        return Targets(version=1, expires=expires)
    signed = base.signed
    signed.version += 1
    signed.expires = expires
    return signed


def delegate(
    keys_dir: Path,
    role: str,
    team: RoleKeys,
    apps: Sequence[str],
    *,
    now: datetime,
    lifetime: timedelta = TARGETS_LIFETIME,
) -> Metadata[Targets]:
    """Delegate exactly `apps`' paths to `role`, trusting `team`'s keys and threshold; returns the signed targets.

    Delegating to a role that is delegated already replaces its keys and apps (a team's new
    keys, another app): what `role` signed before counts again only once it verifies with them.

    Raises:
        DelegationError: bad role or app names, an app delegated to another role, or a bound passed.
        KeyStoreError: the targets threshold is not met, or unusable keys or record.
    """
    _check_publisher(keys_dir)
    problem = role_name_problem(role)
    if problem is not None:
        raise DelegationError(f"bad role name {role!r}: {problem}")
    bad = [app for app in apps if not APP_NAME.fullmatch(app)]
    if bad or not apps:
        raise DelegationError(f"give one or more app names (a-z, 0-9, '-'); not {', '.join(bad) or 'none'}")
    paths = [pattern for app in dict.fromkeys(apps) for pattern in app_patterns(app)]
    if len(paths) > MAX_DELEGATION_PATHS:
        raise DelegationError(f"at most {MAX_DELEGATION_PATHS // 2} apps per role")
    if not 1 <= team.threshold <= len(team.keys) <= MAX_ROLE_KEYS:
        raise DelegationError(f"a team needs 1 to {MAX_ROLE_KEYS} keys and a threshold it can meet")
    signed = _next_targets(keys_dir, now=now, lifetime=lifetime)
    current = copy.deepcopy(signed.delegations) or Delegations(keys={}, roles={})
    roles = dict(current.roles or {})
    for other in roles.values():
        taken = sorted({app for app in apps if other.name != role and _covers(other, app)})
        if taken:
            raise DelegationError(
                f"{', '.join(taken)} is delegated to {other.name} already; revoke that first "
                f"(edgefleet keys revoke-delegation {other.name})"
            )
    if role not in roles and len(roles) >= MAX_DELEGATED_ROLES:
        raise DelegationError(f"the targets delegate to at most {MAX_DELEGATED_ROLES} roles")
    roles[role] = DelegatedRole(
        name=role,
        keyids=[key.keyid for key in team.keys],
        threshold=team.threshold,
        terminating=True,
        paths=paths,
    )
    keys = {**current.keys, **{key.keyid: key for key in team.keys}}
    signed.delegations = _pruned(keys, roles)
    metadata = Metadata(signed)
    sign_targets(keys_dir, metadata)
    return metadata


def revoke(keys_dir: Path, role: str, *, now: datetime, lifetime: timedelta = TARGETS_LIFETIME) -> Metadata[Targets]:
    """Drop `role`'s delegation; returns the signed targets (its releases are no longer targets once pushed).

    Raises:
        DelegationError: the targets do not delegate to `role`.
        KeyStoreError: the targets threshold is not met, or unusable keys or record.
    """
    _check_publisher(keys_dir)
    signed = _next_targets(keys_dir, now=now, lifetime=lifetime)
    current = signed.delegations
    if current is None or current.roles is None or role not in current.roles:
        raise DelegationError(f"the targets do not delegate to {role}")
    roles = {name: entry for name, entry in current.roles.items() if name != role}
    signed.delegations = _pruned(dict(current.keys), roles) if roles else None
    metadata = Metadata(signed)
    sign_targets(keys_dir, metadata)
    return metadata


def _covers(role: DelegatedRole, app: str) -> bool:
    """Whether `role` is delegated some of `app`'s paths."""
    return any(role.is_delegated_path(path) for path in (f"{app}/0/compose.yaml", f"{app}/0/images/x.tar"))


def _pruned(keys: dict[str, Key], roles: dict[str, DelegatedRole]) -> Delegations:
    """Delegations naming only the keys some role still uses."""
    used = {keyid for role in roles.values() for keyid in role.keyids}
    return Delegations(keys={k: v for k, v in keys.items() if k in used}, roles=roles)
