"""Which online key signs a role: the one the newest root names, current or retired, or none the hub holds."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner, Key
from tuf.api.metadata import Metadata, Root, Timestamp

from edgefleet.hub.datadir import HubKeys, load_keys
from edgefleet.hub.errors import UnavailableError
from edgefleet.hub.rotation import rotate_keys
from edgefleet.hub.services.online_keys import (
    director_root_signers,
    names_only,
    repository_signer,
    signed_only_by,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def rotated(hub_keys_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[HubKeys, HubKeys]:
    """The same data dir's keys before and after every online key was rotated."""
    data_dir = tmp_path_factory.mktemp("rotated") / "hub"
    shutil.copytree(hub_keys_dir, data_dir)
    before = load_keys(data_dir)
    rotate_keys(data_dir, ["director", "snapshot", "timestamp"])
    return before, load_keys(data_dir)


def root_naming(**keys: Key) -> Root:
    root = Root(version=1, expires=NOW + timedelta(days=1))
    for role, key in keys.items():
        root.add_key(key, role)
    return root


def director_root(key: Key) -> Root:
    return root_naming(root=key, targets=key, snapshot=key, timestamp=key)


def test_before_any_root_the_current_key_signs(rotated: tuple[HubKeys, HubKeys]) -> None:
    _, keys = rotated
    assert repository_signer(keys, "snapshot", None) is keys.online_signers["snapshot"]
    assert director_root_signers(keys, None) == (keys.online_signers["director"],)


@pytest.mark.parametrize("role", ["snapshot", "timestamp"])
def test_the_key_the_root_names_signs_the_repository(rotated: tuple[HubKeys, HubKeys], role: str) -> None:
    old, new = rotated
    retired = new.retired_signers[role][old.online_signers[role].public_key.keyid]
    assert repository_signer(new, role, root_naming(**{role: old.online_signers[role].public_key})) is retired
    assert (
        repository_signer(new, role, root_naming(**{role: new.online_signers[role].public_key}))
        is (new.online_signers[role])
    )
    # A process that was not restarted does not hold the new key: it refuses.
    with pytest.raises(UnavailableError) as caught:
        repository_signer(old, role, root_naming(**{role: new.online_signers[role].public_key}))
    assert caught.value.code == "online_key_missing"
    assert new.online_signers[role].public_key.keyid in caught.value.message


def test_a_director_root_naming_a_retired_key_is_followed_by_one_signed_with_both(
    rotated: tuple[HubKeys, HubKeys],
) -> None:
    old, new = rotated
    old_key, new_key = old.online_signers["director"].public_key, new.online_signers["director"].public_key
    current, previous = director_root_signers(new, director_root(old_key))
    assert current is new.online_signers["director"]
    assert previous.public_key.keyid == old_key.keyid
    assert director_root_signers(new, director_root(new_key)) == (new.online_signers["director"],)
    with pytest.raises(UnavailableError):
        director_root_signers(old, director_root(new_key))
    with pytest.raises(UnavailableError):
        director_root_signers(new, director_root(CryptoSigner.generate_ed25519().public_key))


def test_names_only_and_signed_only_by(rotated: tuple[HubKeys, HubKeys]) -> None:
    old, new = rotated
    old_key, new_key = old.online_signers["director"].public_key, new.online_signers["director"].public_key
    assert names_only(director_root(new_key), new_key.keyid)
    assert not names_only(director_root(old_key), new_key.keyid)
    mixed = director_root(new_key)
    mixed.add_key(old_key, "timestamp")
    assert not names_only(mixed, new_key.keyid)

    stamp: Metadata[Timestamp] = Metadata(Timestamp(expires=NOW))
    stamp.sign(new.online_signers["director"])
    assert signed_only_by(stamp, new_key.keyid)
    stamp.sign(old.online_signers["director"], append=True)
    assert not signed_only_by(stamp, new_key.keyid)
