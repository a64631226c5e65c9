"""Agent errors; each says whether trying again later can help.

Tree::

    AgentError                    (retryable: bool)
     ├── HubUnreachableError      network, TLS or 5xx trouble: retry with backoff
     ├── HubRefusedError          the hub answered 4xx with a code: fix the input, do not retry
     │    └── DeviceNotAcceptedError  still pending, or rejected/revoked
     ├── IdentityError            the device's own key or identity files are unusable
     ├── UpdateRefusedError       a release failed verification (reason code); nothing was installed
     └── EngineError              the container engine failed an operation (retryable or not)
          └── EngineNotFoundError  the engine has no such object (404)
"""

from __future__ import annotations


class AgentError(Exception):
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
