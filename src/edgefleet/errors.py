"""Errors raised by the shared models (crypto, protocol, bundles); each package converts them at its boundary.

Tree::

    EdgefleetError
     ├── CryptoError                 key, CSR, certificate or token material is unusable
     │    ├── InvalidKeyError        not a parsable key, or a key of a type we do not accept
     │    ├── InvalidCsrError        not a parsable CSR, or its self-signature does not verify
     │    └── InvalidDeviceTokenError a device token is malformed, badly signed or expired
     └── BundleError                 a bundle archive or a document in it is malformed, or lacks the image asked for
"""


class EdgefleetError(Exception):
    """Base of every error edgefleet raises on purpose."""


class CryptoError(EdgefleetError):
    """Key, CSR, certificate or token material is unusable."""


class InvalidKeyError(CryptoError):
    """A key could not be parsed, or is of a type edgefleet does not accept."""


class InvalidCsrError(CryptoError):
    """A certificate signing request could not be parsed or does not verify."""


class InvalidDeviceTokenError(CryptoError):
    """A device token is malformed, not signed by the expected key, or outside its lifetime."""


class BundleError(EdgefleetError):
    """A bundle archive, or a document in it, is malformed or does not hold the image asked for."""
