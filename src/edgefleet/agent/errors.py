"""Agent errors, the agent's one tree; each says whether trying again later can help.

Tree::

    EdgefleetError (edgefleet.errors)
     └── AgentError                    (retryable: bool)
          ├── HubUnreachableError      network, TLS or 5xx trouble: retry with backoff
          ├── HubRefusedError          the hub answered 4xx with a code: fix the input, do not retry
          │    └── DeviceNotAcceptedError  still pending, or rejected/revoked
          ├── IdentityError            the device's own key or identity files are unusable
          ├── UpdateRefusedError       a release failed verification (reason code); nothing was installed
          ├── EngineError              the container engine failed an operation (retryable or not)
          │    └── EngineNotFoundError the engine has no such object (404)
          ├── AgentConfigError         the config file or flags are unusable (also a ValueError)
          ├── PolicyError              the device's policy file is unusable (also a ValueError)
          ├── RootTrustError           no pinned image root, or the hub's is not the pinned one
          ├── PermissionRefusedError   a release asks for permissions the policy does not grant
          ├── PlanError                a target is inconsistent: a dependency cycle or unknown dependency (ValueError)
          ├── NoSpaceError             the engine's storage cannot take an update's images and the reserve
          ├── OverdueError             a transaction's phase ran past its deadline (also a RuntimeError)
          ├── JournalError             an impossible transition, or an unusable journal file
          └── OutboxError              an unusable outbox file, or an event too large to keep

Where an error was a `ValueError` or `RuntimeError` before it joined this tree, it still is,
so that no handler changes what it catches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgefleet.errors import EdgefleetError


class AgentError(EdgefleetError):
    """Base of the agent's errors."""

    retryable: bool = False


class HubUnreachableError(AgentError):
    """The hub could not be reached or failed on its side; a later retry may succeed."""

    retryable = True


class HubRefusedError(AgentError):
    """The hub refused the request with a stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class DeviceNotAcceptedError(HubRefusedError):
    """The device is pending (retry later) or rejected/revoked (do not)."""

    @property
    def retryable(self) -> bool:  # type: ignore[override]  # depends on the refusal
        return self.code == "device_pending"


class IdentityError(AgentError):
    """The device's key or identity files are missing or unusable."""


class UpdateRefusedError(AgentError):
    """A release failed verification; nothing of it was installed. `reason` is a stable code.

    Reasons: ``signature`` (not signed by the trusted keys or threshold), ``expired``,
    ``rollback_attack`` (older metadata than already trusted), ``too_large`` (more data than
    signed or bounded), ``hash_mismatch``, ``wrong_device`` (director metadata for another
    device or architecture), ``mix_and_match`` (director and image repository disagree),
    ``not_in_repository``, ``no_assignment``, ``release_rollback`` (older release without the
    director's rollback mark), ``bad_manifest``, ``metadata`` (any other malformed metadata).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class EngineError(AgentError):
    """The container engine refused or failed an operation; `retryable` when it may pass later."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class EngineNotFoundError(EngineError):
    """The engine has no such object (it answered 404): gone, or never there."""


class AgentConfigError(AgentError, ValueError):
    """The configuration file or flags are unusable."""


class PolicyError(AgentError, ValueError):
    """The policy file is unreadable or malformed."""


class RootTrustError(AgentError):
    """No pinned root, or the hub's root is not the pinned one: the agent does not start (retrying cannot help)."""


class PermissionRefusedError(AgentError):
    """A release asks for permissions the device's policy does not grant; nothing was changed."""

    def __init__(self, app: str, refused: Sequence[Any], described: str) -> None:
        super().__init__(f"{app}: permissions refused on this device: {described}")
        self.app = app
        self.refused = list(refused)
        """The policy's refusals (`agent.policy.Refusal`), `described` in the message."""


class PlanError(AgentError, ValueError):
    """The target itself is inconsistent (a dependency cycle or an unknown dependency)."""


class NoSpaceError(AgentError):
    """The engine's storage has less free space than the update needs plus the reserve."""


class OverdueError(AgentError, RuntimeError):
    """A phase of the transaction ran past its deadline (rolled back, tried again later)."""


class JournalError(AgentError):
    """An impossible transition, a second open transaction for an app, or an unusable journal file."""


class OutboxError(AgentError):
    """The outbox file is unusable, or an event is too large to keep."""
