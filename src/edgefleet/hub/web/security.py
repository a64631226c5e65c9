"""CSRF defences for the dashboard's forms: the same-origin check and the constant-time token comparison.

A state-changing request must come from the dashboard's own origin (its ``Origin`` header,
or its ``Referer`` when a browser sends no Origin) and carry the session's synchronizer token
(or, for the login form, the token of the login cookie). Pure functions; the routes call them.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from edgefleet.hub.web.errors import CsrfError

CSRF_FIELD = "csrf"
MAX_TOKEN_CHARS = 128


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lowercased; None when it has none."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(*, origin: str | None, referer: str | None, expected: str) -> None:
    """Refuse a request that does not name the dashboard's own origin.

    Raises:
        CsrfError: the Origin (or, without one, the Referer) is another site, or neither was sent.
    """
    expected = expected.lower()
    if origin is not None and origin != "null":
        if origin.lower() != expected:
            raise CsrfError("refused: this form was sent from another site")
        return
    if referer:
        if origin_of(referer) != expected:
            raise CsrfError("refused: this form was sent from another site")
        return
    raise CsrfError("refused: the browser did not say where this form came from (no Origin or Referer)")


def check_token(given: str | None, expected: str) -> None:
    """Compare the form's CSRF token with the expected one in constant time.

    Raises:
        CsrfError: missing, oversized or different.
    """
    if not given:
        raise CsrfError("refused: the form carries no CSRF token; reload the page and try again")
    if len(given) > MAX_TOKEN_CHARS or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfError("refused: the form's CSRF token is wrong or stale; reload the page and try again")
