"""The key directory's copy of what it last signed for the repository, and signing targets with its keys.

``KEYS/repository/root.json`` is written when a root is pushed, ``KEYS/repository/targets.json``
when targets are signed (in a team's key directory, ``KEYS/repository/ROLE.json`` for its
delegated role); they are the publisher's own record, trusted as the key directory itself is,
so a new release or a rotation starts from them and never from what a hub says.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from securesystemslib.exceptions import FormatError, UnverifiedSignatureError, VerificationError
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, Root, Targets

from edgefleet.crypto import write_public_file
from edgefleet.publisher.errors import KeyStoreError
from edgefleet.publisher.keys import load_delegated, load_index, load_signers

ROOT = Path("repository") / "root.json"
TARGETS = Path("repository") / "targets.json"
"""The top-level targets record (`record_path()`)."""
TARGETS_LIFETIME = timedelta(days=365)


def save_root(keys_dir: Path, root: Metadata[Root]) -> None:
    (keys_dir / ROOT).parent.mkdir(mode=0o700, exist_ok=True)
    write_public_file(keys_dir / ROOT, json.dumps(root.to_dict(), indent=1, sort_keys=True).encode())


def load_root(keys_dir: Path) -> Metadata[Root]:
    """The last root this key directory signed and pushed.

    Raises:
        KeyStoreError: missing (run `edgefleet repo init` first) or unreadable.
    """
    path = keys_dir / ROOT
    try:
        return Metadata[Root].from_bytes(path.read_bytes())
    except FileNotFoundError as exc:
        raise KeyStoreError(f"{path} is missing: this key directory has not initialised a repository") from exc
    except (OSError, ValueError, RepositoryError, FormatError) as exc:
        raise KeyStoreError(f"{path} is unusable: {exc}") from exc


def record_path(role: str = "targets") -> Path:
    """Where a key directory records the last targets metadata it signed for `role`."""
    return Path("repository") / f"{role}.json"


def signing_role(keys_dir: Path) -> str:
    """The targets role this key directory signs: "targets", or a team's delegated role.

    Raises:
        KeyStoreError: missing or malformed keys.json.
    """
    team = load_delegated(keys_dir)
    return "targets" if team is None else team[0]


def sign_targets(keys_dir: Path, metadata: Metadata[Targets], *, role: str = "targets") -> bytes:
    """Sign with every key of `role` present, check its threshold, record the result; returns the JSON.

    Raises:
        KeyStoreError: fewer valid signatures than the role's threshold in keys.json.
    """
    metadata.signatures.clear()
    for signer in load_signers(keys_dir, role):
        metadata.sign(signer, append=True)
    team = load_delegated(keys_dir)
    listed = load_index(keys_dir)["targets"] if team is None else team[1]
    keys = {key.keyid: key for key in listed.keys}
    valid = 0
    for keyid, signature in metadata.signatures.items():
        if keyid not in keys:
            continue
        try:
            keys[keyid].verify_signature(signature, metadata.signed_bytes)
            valid += 1
        except (UnverifiedSignatureError, VerificationError):
            continue
    if valid < listed.threshold:
        raise KeyStoreError(f"{role} signed by {valid} of the {listed.threshold} keys needed; bring more {role} keys")
    body = json.dumps(metadata.to_dict(), indent=1, sort_keys=True).encode()
    (keys_dir / record_path(role)).parent.mkdir(mode=0o700, exist_ok=True)
    write_public_file(keys_dir / record_path(role), body)
    return body


def targets_record(keys_dir: Path, *, role: str = "targets") -> bytes | None:
    """The key directory's targets record as it is now (None: nothing signed yet), to put back later."""
    path = keys_dir / record_path(role)
    return path.read_bytes() if path.exists() else None


def restore_targets_record(keys_dir: Path, record: bytes | None, *, role: str = "targets") -> None:
    """Put back a record from `targets_record`: for a signing whose release the hub never stored.

    A release signed in one step with its push (`release publish`) and not published must not
    stay in the record: the next publish would sign it again, or name files the hub lacks.
    """
    path = keys_dir / record_path(role)
    if record is None:
        path.unlink(missing_ok=True)
    else:
        write_public_file(path, record)


def load_targets(keys_dir: Path, *, role: str = "targets") -> Metadata[Targets] | None:
    """The last targets metadata this key directory signed for `role`, if any.

    Raises:
        KeyStoreError: present but unreadable.
    """
    path = keys_dir / record_path(role)
    if not path.exists():
        return None
    try:
        return Metadata[Targets].from_bytes(path.read_bytes())
    except (OSError, ValueError, RepositoryError, FormatError) as exc:
        raise KeyStoreError(f"{path} is unusable: {exc}") from exc


def resign_targets(
    keys_dir: Path, *, now: datetime, lifetime: timedelta = TARGETS_LIFETIME
) -> Metadata[Targets] | None:
    """The recorded targets as a new version signed with the current targets keys (after a rotation).

    Returns None when this key directory has not signed targets yet.
    """
    metadata = load_targets(keys_dir)
    if metadata is None:
        return None
    metadata.signed.version += 1
    metadata.signed.expires = (now + lifetime).replace(microsecond=0)
    sign_targets(keys_dir, metadata)
    return metadata
