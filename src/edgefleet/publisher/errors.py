"""Publisher errors.

Tree::

    PublisherError
     ├── KeyStoreError     the key directory is missing, malformed, too open, or would be overwritten
     └── AnswerLostError   a push whose answer never came: the hub may hold what was sent, or not
"""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class PublisherError(EdgefleetError):
    """Base of the publisher tools' errors."""


class KeyStoreError(PublisherError):
    """The publisher's key directory cannot be created or used."""


class AnswerLostError(PublisherError):
    """A push whose answer never came: the hub may hold what was sent, or not."""
