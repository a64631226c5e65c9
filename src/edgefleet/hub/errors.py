"""Hub errors: each carries an HTTP status and a stable code; one handler turns them into responses.

Tree::

    HubError                    (status, code, message)
     ├── BadRequestError        400  input parsed but unacceptable (invalid CSR, wrong key type, ...)
     ├── AuthenticationError    401  no credentials, or credentials that identify nobody
     ├── ForbiddenError         403  identified, but not allowed (role, device status, other device)
     ├── EnrollmentRefusedError 403  the enrollment token cannot be used (expired, exhausted, revoked)
     ├── NotFoundError          404
     ├── ConflictError          409  the request contradicts current state (name taken, already decided)
     ├── PayloadTooLargeError   413  a streamed upload passed its bound
     ├── UnavailableError       503  this process cannot do it now (its keys are older than the roots)
     └── HubConfigError         --   the data dir or database is unusable (start-up only, never HTTP)
"""

from __future__ import annotations

from typing import ClassVar

from edgefleet.errors import EdgefleetError


class HubError(EdgefleetError):
    """A failure the hub reports to its caller with a stable code."""

    status: ClassVar[int] = 500

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BadRequestError(HubError):
    """The request parsed but its content is unacceptable."""

    status = 400


class AuthenticationError(HubError):
    """No credentials, or credentials that identify nobody."""

    status = 401


class ForbiddenError(HubError):
    """The caller is known but may not do this."""

    status = 403


class EnrollmentRefusedError(ForbiddenError):
    """An enrollment token is unknown, expired, exhausted or revoked."""


class NotFoundError(HubError):
    """The named resource does not exist (or is not visible to the caller)."""

    status = 404


class ConflictError(HubError):
    """The request contradicts the current state."""

    status = 409


class PayloadTooLargeError(HubError):
    """A streamed body (an artifact upload) passed its bound."""

    status = 413


class UnavailableError(HubError):
    """The request cannot be served by this process now, through no fault of the caller; another may, or later."""

    status = 503


class HubConfigError(HubError):
    """The hub cannot start: unusable data dir, keys or database."""
