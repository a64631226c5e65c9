"""Delegated targets, decided on values: what the top-level targets may delegate, and where a client finds a path.

Pure functions over python-tuf metadata: no database, no clock. The hub accepts delegations
only from the top-level targets (a delegated role that delegates further is refused), so the
search here is one level deep, in the order and with the stops of a TUF client (python-tuf's
ngclient): the top-level targets' own entry first, then each role delegated the path, in
order, ending at the first that lists it or at a terminating one. A role is searched only
when its stored metadata verifies against the keys and threshold the top-level targets give
it now: after a revocation or a change of keys, what it signed before is found by no client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from securesystemslib.exceptions import FormatError
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import DelegatedRole, Metadata, Targets

from edgefleet.hub.errors import BadRequestError
from edgefleet.releases import (
    MAX_DELEGATED_ROLES,
    MAX_DELEGATION_PATHS,
    MAX_PATTERN_LENGTH,
    MAX_ROLE_KEYS,
    role_name_problem,
)

TOP_LEVEL = Targets.type
Loader = Callable[[str], Metadata[Any] | None]
"""Delegated role name -> its newest stored metadata (None: none stored)."""


def check_delegations(targets: Targets) -> None:
    """Refuse delegations the hub does not serve: other than plain named roles, or past any bound.

    Raises:
        BadRequestError: invalid_delegation, naming the first problem.
    """
    delegations = targets.delegations
    if delegations is None:
        return
    if delegations.roles is None:
        raise BadRequestError("invalid_delegation", "succinct hash-bin delegations are not supported")
    if len(delegations.roles) > MAX_DELEGATED_ROLES:
        raise BadRequestError("invalid_delegation", f"at most {MAX_DELEGATED_ROLES} delegated roles")
    if len(delegations.keys) > MAX_DELEGATED_ROLES * MAX_ROLE_KEYS:
        raise BadRequestError("invalid_delegation", f"at most {MAX_DELEGATED_ROLES * MAX_ROLE_KEYS} delegation keys")
    for name, role in delegations.roles.items():
        problem = _role_problem(role, set(delegations.keys))
        if problem is not None:
            raise BadRequestError("invalid_delegation", f"{name[:40]}: {problem}")


def _role_problem(role: DelegatedRole, keyids: set[str]) -> str | None:
    name_problem = role_name_problem(role.name)
    if name_problem is not None:
        return name_problem
    if not 1 <= len(role.keyids) <= MAX_ROLE_KEYS or len(set(role.keyids)) != len(role.keyids):
        return f"1 to {MAX_ROLE_KEYS} distinct keys"
    if not set(role.keyids) <= keyids:
        return "a key ID that is not among the delegations' keys"
    if role.threshold > len(role.keyids):
        return f"threshold {role.threshold} but only {len(role.keyids)} keys"
    patterns = role.paths if role.paths is not None else role.path_hash_prefixes
    if not patterns or len(patterns) > MAX_DELEGATION_PATHS:
        return f"1 to {MAX_DELEGATION_PATHS} paths (or path hash prefixes)"
    if any(not isinstance(p, str) or not 0 < len(p) <= MAX_PATTERN_LENGTH for p in patterns):
        return f"a path pattern must be 1 to {MAX_PATTERN_LENGTH} characters"
    return None


def delegated_roles(targets: Targets) -> dict[str, DelegatedRole]:
    """The roles the top-level targets delegate to, in their order."""
    if targets.delegations is None or targets.delegations.roles is None:
        return {}
    return dict(targets.delegations.roles)


def verifies(top: Targets, name: str, metadata: Metadata[Any]) -> bool:
    """Whether `metadata` is targets metadata signed by the threshold of keys `top` delegates `name` to."""
    if not isinstance(metadata.signed, Targets) or name not in delegated_roles(top):
        return False
    try:
        top.verify_delegate(name, metadata.signed_bytes, metadata.signatures)
    except (UnsignedMetadataError, ValueError, TypeError, KeyError, FormatError):
        return False
    return True


def find(top: Targets, path: str, load: Loader) -> str | None:
    """The role a TUF client finds `path` in ("targets" for the top-level), or None when it finds none.

    A role on the way whose metadata is missing or does not verify ends the search: a client's
    search fails there too.
    """
    if path in top.targets:
        return TOP_LEVEL
    if top.delegations is None or top.delegations.roles is None:
        return None
    for name, terminating in top.delegations.get_roles_for_target(path):
        metadata = load(name)
        if metadata is None or not verifies(top, name, metadata):
            return None
        if path in metadata.signed.targets:
            return name
        if terminating:
            return None
    return None
