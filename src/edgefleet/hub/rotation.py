"""Rotating the hub's online TUF keys in its data dir: new keys become current, the old ones are kept as retired.

An offline step (`edgefleet hub keys rotate`): running hub processes keep the keys they
loaded until they are restarted. The hub then signs each role with the key its newest root
names (`services.online_keys`), so the retired keys stay until the new roots are out.

Each step survives a crash:

1. the new keys, and a note of what is rotated, are written under ``keys/.rotating/``, and a
   copy of each current key goes to ``keys/retired/ROLE/KEYID.key`` (never overwritten). Cut
   short here, the old keys are still current and the next run discards ``.rotating``;
2. ``keys/.rotating`` is renamed ``keys/pending``: from here on the rotation happens;
3. each new ``.pub`` and ``.key`` replaces the current one, then ``keys/pending`` goes. Cut
   short here, the hub refuses to start and the same command, run again, finishes it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgefleet import crypto
from edgefleet.files import sync_dir
from edgefleet.hub.datadir import MAX_RETIRED, ONLINE_ROLES, PENDING, RETIRED, load_keys
from edgefleet.hub.errors import HubConfigError

STAGING = ".rotating"
NOTE = "rotation.json"


@dataclass(frozen=True)
class RotatedKey:
    """One role's new key and the key it replaced (now under keys/retired/ROLE/)."""

    role: str
    keyid: str
    retired_keyid: str


@dataclass(frozen=True)
class KeyRotation:
    keys: tuple[RotatedKey, ...]
    resumed: bool
    """True when this run finished a rotation an earlier run had started."""


def rotate_keys(data_dir: Path, roles: Sequence[str]) -> KeyRotation:
    """Replace the online keys of `roles` in the data dir; the replaced keys are kept as retired.

    Raises:
        HubConfigError: an unknown role; not a hub data dir or unusable keys (nothing is
            written); a retired-key directory already full; an interrupted rotation of other
            roles; or the disk refused a write (before the commit point nothing changed; after
            it, running the same command again finishes the rotation).
    """
    wanted = _checked_roles(roles)
    keys_dir = data_dir / "keys"
    if not (data_dir / "ca.key").exists():
        raise HubConfigError("data_dir_missing", f"{data_dir} is not a hub data dir: run `edgefleet hub init` first")
    if (keys_dir / PENDING).exists():
        return _finish(data_dir, wanted, resumed=True)
    current = load_keys(data_dir)  # everything readable, the retired keys too, before anything is written
    for role in wanted:
        if len(current.retired_signers[role]) >= MAX_RETIRED:
            raise HubConfigError(
                "too_many_retired_keys",
                f"{keys_dir / RETIRED / role} already holds {MAX_RETIRED} keys: remove those no root names any more",
            )
    staging = keys_dir / STAGING
    created: list[Path] = []
    try:
        shutil.rmtree(staging, ignore_errors=True)  # left by a run cut short before its commit point
        staging.mkdir(mode=0o700)
        note = {}
        for role in wanted:
            key = crypto.generate_key("ed25519")
            crypto.write_private_file(staging / f"{role}.key", crypto.private_key_pem(key))
            crypto.write_public_file(staging / f"{role}.pub", crypto.public_key_pem(key.public_key()).encode())
            old = current.online_signers[role].public_key.keyid
            _retire(keys_dir, role, old, created)
            note[role] = old
        crypto.write_public_file(staging / NOTE, json.dumps(note).encode())
        sync_dir(staging)
        os.replace(staging, keys_dir / PENDING)
        sync_dir(keys_dir)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        for path in created:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise HubConfigError(
                "data_dir_unwritable", f"cannot rotate keys in {keys_dir}: {exc.strerror or exc}; nothing changed"
            ) from exc
        raise
    return _finish(data_dir, wanted, resumed=False)


def _checked_roles(roles: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(roles) - set(ONLINE_ROLES))
    if unknown or not roles:
        raise HubConfigError(
            "unknown_role", f"cannot rotate {', '.join(unknown) or 'no role'}: the roles are {', '.join(ONLINE_ROLES)}"
        )
    return tuple(role for role in ONLINE_ROLES if role in roles)


def _retire(keys_dir: Path, role: str, keyid: str, created: list[Path]) -> None:
    """Copy the current key of `role` to keys/retired/ROLE/KEYID.{pub,key}, adding the files it writes to `created`.

    The .pub goes first: a hub loads retired keys by their .key, so a copy cut short by a
    crash is never taken for a key.
    """
    directory = keys_dir / RETIRED / role
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(keys_dir / RETIRED, 0o700)
    for suffix in (".pub", ".key"):
        target = directory / f"{keyid}{suffix}"
        if target.exists():  # copied by an earlier run cut short: the same key (the name is its ID)
            continue
        data = (keys_dir / f"{role}{suffix}").read_bytes()
        if suffix == ".key":
            crypto.write_private_file(target, data)
        else:
            crypto.write_public_file(target, data)
        created.append(target)
    sync_dir(directory)


def _finish(data_dir: Path, wanted: tuple[str, ...], *, resumed: bool) -> KeyRotation:
    """Move the pending keys into place (the commit point is passed), then check that they load."""
    keys_dir = data_dir / "keys"
    pending = keys_dir / PENDING
    try:
        note = json.loads((pending / NOTE).read_text())
        if not isinstance(note, dict) or not set(note) <= set(ONLINE_ROLES):
            raise ValueError("not a rotation note")
    except (OSError, ValueError) as exc:
        raise HubConfigError(
            "rotation_unfinished", f"{pending} is damaged ({exc}); restore keys/ from a backup"
        ) from exc
    if set(note) != set(wanted):
        again = " ".join(f"--role {role}" for role in note)
        raise HubConfigError(
            "rotation_unfinished",
            f"an interrupted rotation of {', '.join(note)} is in {pending}: finish it first with "
            f"`edgefleet hub keys rotate --data-dir {data_dir} {again}`",
        )
    try:
        for role in note:
            for suffix in (".pub", ".key"):
                if (pending / f"{role}{suffix}").exists():
                    os.replace(pending / f"{role}{suffix}", keys_dir / f"{role}{suffix}")
        sync_dir(keys_dir)
        (pending / NOTE).unlink()
        pending.rmdir()
        sync_dir(keys_dir)
    except OSError as exc:
        raise HubConfigError(
            "data_dir_unwritable",
            f"the key rotation in {keys_dir} was cut short ({exc.strerror or exc}): run the same command again",
        ) from exc
    loaded = load_keys(data_dir)
    rotated = tuple(
        RotatedKey(role=role, keyid=loaded.online_signers[role].public_key.keyid, retired_keyid=str(note[role]))
        for role in ONLINE_ROLES
        if role in note
    )
    return KeyRotation(keys=rotated, resumed=resumed)
