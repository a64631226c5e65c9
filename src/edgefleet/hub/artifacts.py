"""Content-addressed artifact files (manifests, OCI archives) on the hub's disk, named by their SHA-256.

A file appears under its final name only after its bytes were counted and hashed on the way
in and matched what the uploader declared, so a name always means those exact bytes.
Layout: ``ARTIFACTS/sha256/<hex>``; partial uploads live in ``ARTIFACTS/incoming/`` and are
removed on any failure.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO

from edgefleet.hub.errors import BadRequestError, ConflictError, PayloadTooLargeError

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ArtifactStore:
    """The artifact directory of one hub."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        """Where the artifact with this digest lives (whether or not it exists)."""
        if not SHA256_HEX.fullmatch(sha256):
            raise BadRequestError("invalid_digest", "artifact digests are 64 lowercase hex characters")
        return self.root / "sha256" / sha256

    def size(self, sha256: str) -> int | None:
        """The stored length, or None when absent."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def begin(self, sha256: str, *, max_bytes: int) -> Upload:
        """Start receiving the artifact that should hash to `sha256`."""
        target = self.path(sha256)
        (self.root / "incoming").mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        return Upload(self.root / "incoming" / f"{sha256}.{secrets.token_hex(6)}", target, sha256, max_bytes)


class Upload:
    """One artifact being received; `finish` publishes it, `abort` (or any error) leaves nothing behind."""

    def __init__(self, partial: Path, target: Path, sha256: str, max_bytes: int) -> None:
        self._partial = partial
        self._target = target
        self._expected = sha256
        self._max = max_bytes
        self._hash = hashlib.sha256()
        self.length = 0
        self._file: BinaryIO = open(partial, "xb")  # noqa: SIM115  # closed by finish/abort

    def write(self, chunk: bytes) -> None:
        self.length += len(chunk)
        if self.length > self._max:
            self.abort()
            raise PayloadTooLargeError("artifact_too_large", f"artifacts are limited to {self._max} bytes")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> int:
        """Check the digest, make the file durable and give it its final name; returns the length."""
        if self._hash.hexdigest() != self._expected:
            self.abort()
            raise ConflictError("digest_mismatch", f"uploaded bytes hash to sha256:{self._hash.hexdigest()}")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.chmod(self._partial, 0o644)
        os.replace(self._partial, self._target)
        return self.length

    def abort(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)
