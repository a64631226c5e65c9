"""The publisher's offline keys for the image repository: root and targets, or a team's delegated role.

Layout of a key directory (the hub never sees it)::

    KEYS/keys.json                 per role: threshold and public keys (TUF key format)
    KEYS/<role>/<keyid>.key        private keys, PKCS#8 PEM, mode 0600

A publisher's directory holds the roles "root" and "targets". A team's directory
(`init_delegated_keys`) holds one delegated role, marked ``"delegated": true`` in keys.json;
that file has public keys only, and is what the team hands to the targets key holders.

Keys are made and used through securesystemslib's `CryptoSigner`, so they can later move
to an HSM or KMS signer without changing the metadata code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Key, SSlibKey

from edgefleet.crypto import write_private_file, write_public_file
from edgefleet.files import filled_whole
from edgefleet.publisher.errors import KeyStoreError
from edgefleet.releases import role_name_problem

Role = Literal["root", "targets"]
ROLES: tuple[Role, ...] = ("root", "targets")
KeyType = Literal["ed25519", "ecdsa"]
MAX_KEYS = 16
INDEX = "keys.json"


@dataclass(frozen=True)
class RoleKeys:
    """One role's threshold and public keys."""

    threshold: int
    keys: tuple[Key, ...]


def _generate(key_type: KeyType) -> CryptoSigner:
    return CryptoSigner.generate_ed25519() if key_type == "ed25519" else CryptoSigner.generate_ecdsa()


def init_keys(
    directory: Path, *, threshold: int = 1, count: int | None = None, key_type: KeyType = "ed25519"
) -> dict[Role, RoleKeys]:
    """Create `count` keys (default: `threshold`) for root and for targets.

    Raises:
        KeyStoreError: bad threshold/count, the directory exists and is not empty, or it cannot
            be written (what was written is removed again).
    """
    count = _checked_count(threshold, count)
    if directory.exists() and any(directory.iterdir()):
        raise KeyStoreError(f"{directory} already exists and is not empty; refusing to overwrite keys")
    try:
        with filled_whole(directory):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory, 0o700)
            roles: dict[Role, RoleKeys] = {}
            for role in ROLES:
                (directory / role).mkdir(mode=0o700)
                roles[role], _ = _new_keys(directory / role, threshold=threshold, count=count, key_type=key_type)
            _write_index(directory, roles)
    except OSError as exc:
        raise KeyStoreError(f"cannot create keys in {directory}: {exc.strerror or exc}") from exc
    return roles


def _checked_count(threshold: int, count: int | None) -> int:
    count = threshold if count is None else count
    if not 1 <= threshold <= count <= MAX_KEYS:
        raise KeyStoreError(f"need 1 <= threshold <= keys <= {MAX_KEYS} (got threshold {threshold}, keys {count})")
    return count


def _new_keys(directory: Path, *, threshold: int, count: int, key_type: KeyType) -> tuple[RoleKeys, list[CryptoSigner]]:
    """`count` new private keys written into `directory` (0600), and their public half."""
    signers = [_generate(key_type) for _ in range(count)]
    for signer in signers:
        write_private_file(directory / f"{signer.public_key.keyid}.key", signer.private_bytes)
    return RoleKeys(threshold=threshold, keys=tuple(s.public_key for s in signers)), signers


def _write_index(directory: Path, roles: dict[Role, RoleKeys]) -> None:
    index = {role: _index_entry(keys) for role, keys in roles.items()}
    write_public_file(directory / INDEX, json.dumps(index, indent=2, sort_keys=True).encode())


def _index_entry(keys: RoleKeys) -> dict[str, Any]:
    return {"threshold": keys.threshold, "keys": {k.keyid: k.to_dict() for k in keys.keys}}


def init_delegated_keys(
    directory: Path, role: str, *, threshold: int = 1, count: int | None = None, key_type: KeyType = "ed25519"
) -> RoleKeys:
    """Create a team's key directory: `count` keys (default: `threshold`) of the delegated role `role`.

    Raises:
        KeyStoreError: bad role name, threshold or count, the directory exists and is not empty,
            or it cannot be written (what was written is removed again).
    """
    problem = role_name_problem(role)
    if problem is not None:
        raise KeyStoreError(f"bad role name {role!r}: {problem}")
    count = _checked_count(threshold, count)
    if directory.exists() and any(directory.iterdir()):
        raise KeyStoreError(f"{directory} already exists and is not empty; refusing to overwrite keys")
    try:
        with filled_whole(directory):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory, 0o700)
            (directory / role).mkdir(mode=0o700)
            keys, _ = _new_keys(directory / role, threshold=threshold, count=count, key_type=key_type)
            index = {role: {**_index_entry(keys), "delegated": True}}
            write_public_file(directory / INDEX, json.dumps(index, indent=2, sort_keys=True).encode())
    except OSError as exc:
        raise KeyStoreError(f"cannot create keys in {directory}: {exc.strerror or exc}") from exc
    return keys


def key_from_wire(data: dict[str, Any]) -> SSlibKey:
    """A TUF public key from the hub's `{"keyid": ..., "keytype": ..., ...}` form (online-keys answer).

    Raises:
        KeyStoreError: not a TUF public key.
    """
    try:
        return SSlibKey.from_dict(str(data["keyid"]), {k: v for k, v in data.items() if k != "keyid"})
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise KeyStoreError(f"not a TUF public key: {exc}") from exc


def _read_index(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeyStoreError(f"{path} is missing or malformed: {exc}") from exc
    if not isinstance(raw, dict):
        raise KeyStoreError(f"{path} is malformed: not a JSON object")
    return raw


def _role_keys(path: Path, entry: Any) -> RoleKeys:
    try:
        keys = tuple(SSlibKey.from_dict(keyid, dict(data)) for keyid, data in entry["keys"].items())
        threshold = int(entry["threshold"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyStoreError(f"{path} is malformed: {exc}") from exc
    if not 1 <= threshold <= len(keys) <= MAX_KEYS:
        raise KeyStoreError(f"{path} is malformed: threshold {threshold} of {len(keys)} keys")
    return RoleKeys(threshold=threshold, keys=keys)


def _delegated_entry(path: Path, raw: dict[str, Any]) -> tuple[str, Any] | None:
    """The one delegated role of a team's keys.json, or None when it is a publisher's."""
    marked = [(name, entry) for name, entry in raw.items() if isinstance(entry, dict) and entry.get("delegated")]
    if not marked:
        return None
    if len(marked) != 1 or len(raw) != 1:
        raise KeyStoreError(f"{path} is malformed: a team's keys.json holds exactly one delegated role")
    name, entry = marked[0]
    problem = role_name_problem(name)
    if problem is not None:
        raise KeyStoreError(f"{path} is malformed: role {name[:40]!r}: {problem}")
    return name, entry


def load_index(directory: Path) -> dict[Role, RoleKeys]:
    """The public half of a publisher's key directory (root and targets).

    Raises:
        KeyStoreError: missing or malformed keys.json, or a team's key directory.
    """
    path = directory / INDEX
    raw = _read_index(path)
    team = _delegated_entry(path, raw)
    if team is not None:
        raise KeyStoreError(
            f"{directory} holds the keys of the delegated role {team[0]}, not the publisher's root and targets keys"
        )
    missing = [role for role in ROLES if role not in raw]
    if missing:
        raise KeyStoreError(f"{path} is missing or malformed: no {', '.join(missing)} keys")
    return {role: _role_keys(path, raw[role]) for role in ROLES}


def load_delegated(directory: Path) -> tuple[str, RoleKeys] | None:
    """The delegated role (name and public keys) of a team's key directory; None for a publisher's.

    Raises:
        KeyStoreError: missing or malformed keys.json.
    """
    return team_keys(directory / INDEX, missing_ok=True)


def team_keys(path: Path, *, missing_ok: bool = False) -> tuple[str, RoleKeys] | None:
    """The delegated role and its public keys from a team's keys.json (what a team hands over).

    Returns None when the file is a publisher's keys.json and `missing_ok`.

    Raises:
        KeyStoreError: missing, malformed, or not a team's (unless `missing_ok`).
    """
    raw = _read_index(path)
    team = _delegated_entry(path, raw)
    if team is None:
        if missing_ok:
            return None
        raise KeyStoreError(f"{path} is not a team's keys.json (edgefleet keys init --delegated ROLE writes one)")
    return team[0], _role_keys(path, team[1])


def _listed_keys(directory: Path, role: str) -> dict[str, Key]:
    team = load_delegated(directory)
    if team is not None:
        if role != team[0]:
            raise KeyStoreError(f"{directory} holds the keys of {team[0]}, not of {role}")
        return {key.keyid: key for key in team[1].keys}
    if role not in ROLES:
        raise KeyStoreError(f"{directory} holds root and targets keys, not keys of {role}")
    return {key.keyid: key for key in load_index(directory)["root" if role == "root" else "targets"].keys}


def load_signers(directory: Path, role: str) -> list[CryptoSigner]:
    """Every private key of `role` that is present (a threshold may be met by several holders).

    Raises:
        KeyStoreError: a key file is readable by others, unparsable, or not listed in keys.json.
    """
    listed = _listed_keys(directory, role)
    signers = []
    for path in sorted((directory / role).glob("*.key")):
        if path.stat().st_mode & 0o077:
            raise KeyStoreError(f"{path} must have mode 0600")
        keyid = path.stem
        if keyid not in listed:
            raise KeyStoreError(f"{path} is not listed in {INDEX}")
        try:
            private = load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise KeyStoreError(f"{path} is not a usable private key") from exc
        public = listed[keyid]
        if not isinstance(public, SSlibKey):
            raise KeyStoreError(f"{keyid}: unsupported key in {INDEX}")
        signers.append(CryptoSigner(private, public))
    return signers


PENDING = "pending"
RETIRED = "retired"


def stage_rotation(
    directory: Path, role: Role, *, threshold: int, count: int | None = None, key_type: KeyType = "ed25519"
) -> tuple[RoleKeys, list[CryptoSigner]]:
    """New keys for `role`, written under KEYS/pending/<role>/ until `commit_rotation`.

    They are on disk before any root naming them leaves this machine, so a crash after the
    push can never lose the only keys the repository trusts.

    Raises:
        KeyStoreError: bad threshold/count, or a rotation of `role` is already pending.
    """
    count = _checked_count(threshold, count)
    pending = directory / PENDING / role
    if pending.exists() and any(pending.iterdir()):
        raise KeyStoreError(f"a {role} rotation is already pending in {pending}; finish or remove it")
    pending.mkdir(parents=True, exist_ok=True, mode=0o700)
    return _new_keys(pending, threshold=threshold, count=count, key_type=key_type)


def commit_rotation(directory: Path, role: Role, new_keys: RoleKeys) -> None:
    """Make the pending keys of `role` current; the old private keys move to KEYS/retired/<role>/."""
    retired = directory / RETIRED / role
    retired.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (directory / role).glob("*.key"):
        os.replace(path, retired / path.name)
    for path in (directory / PENDING / role).glob("*.key"):
        os.replace(path, directory / role / path.name)
    roles = load_index(directory)
    roles[role] = new_keys
    _write_index(directory, roles)
    (directory / PENDING / role).rmdir()


def discard_rotation(directory: Path, role: Role) -> None:
    """Forget a pending rotation that was never published."""
    pending = directory / PENDING / role
    for path in pending.glob("*.key"):
        path.unlink()
    if pending.exists():
        pending.rmdir()
