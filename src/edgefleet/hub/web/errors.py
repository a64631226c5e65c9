"""Dashboard errors raised before any service runs (bad forms, CSRF); services raise `HubError`s.

Tree::

    WebError                 (status, message) answered as an HTML page
     ├── FormError           400 unreadable form, 413 too large, 415 not a form
     └── CsrfError           403 missing or wrong CSRF token, or a request from another origin
"""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class WebError(EdgefleetError):
    """A refusal the dashboard answers with a page saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FormError(WebError):
    """The form body cannot be read: not a form, too large, not UTF-8, or malformed."""


class CsrfError(WebError):
    """The state-changing request did not prove it came from the dashboard's own page."""

    def __init__(self, message: str) -> None:
        super().__init__(403, message)
