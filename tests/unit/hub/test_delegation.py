"""Where the hub says a client finds a path: the top-level targets, then delegated roles as a TUF client searches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, TargetFile, Targets

from edgefleet.hub.delegation import find, verifies

EXPIRES = datetime.now(UTC) + timedelta(days=1)
PATH = "sensor/1.0.0/compose.yaml"


class Repo:
    def __init__(self) -> None:
        self.top = Targets(expires=EXPIRES)
        self.top.delegations = Delegations(keys={}, roles={})
        self.signers: dict[str, CryptoSigner] = {}
        self.roles: dict[str, Metadata[Any]] = {}

    def delegate(self, name: str, paths: list[str], *, terminating: bool = False, lists: bool = False) -> None:
        signer = self.signers[name] = CryptoSigner.generate_ed25519()
        assert self.top.delegations is not None
        assert self.top.delegations.roles is not None
        self.top.delegations.keys[signer.public_key.keyid] = signer.public_key
        self.top.delegations.roles[name] = DelegatedRole(name, [signer.public_key.keyid], 1, terminating, paths)
        signed = Targets(expires=EXPIRES)
        if lists:
            signed.targets[PATH] = TargetFile.from_data(PATH, name.encode())
        self.roles[name] = Metadata(signed)
        self.roles[name].sign(signer)

    def find(self, path: str = PATH) -> str | None:
        return find(self.top, path, self.roles.get)


def test_the_top_level_targets_come_first():
    repo = Repo()
    repo.delegate("team", ["sensor/*/*"], lists=True)
    repo.top.targets[PATH] = TargetFile.from_data(PATH, b"top")
    assert repo.find() == "targets"


def test_the_first_role_in_order_that_lists_the_path_wins():
    repo = Repo()
    repo.delegate("other", ["other/*/*"], lists=True)
    repo.delegate("empty", ["sensor/*/*"])
    repo.delegate("first", ["sensor/*/*"], lists=True)
    repo.delegate("second", ["sensor/*/*"], lists=True)
    assert repo.find() == "first"
    assert repo.find("nowhere/1.0.0/compose.yaml") is None


def test_a_terminating_role_ends_the_search():
    repo = Repo()
    repo.delegate("team", ["sensor/*/*"], terminating=True)
    repo.delegate("later", ["sensor/*/*"], lists=True)
    assert repo.find() is None


@pytest.mark.parametrize("damage", ["missing", "signed by a foreign key"])
def test_a_role_a_client_could_not_verify_ends_the_search(damage):
    repo = Repo()
    repo.delegate("team", ["sensor/*/*"], lists=True)
    repo.delegate("later", ["sensor/*/*"], lists=True)
    if damage == "missing":
        del repo.roles["team"]
    else:
        repo.roles["team"].sign(CryptoSigner.generate_ed25519())
    assert repo.find() is None


def test_a_role_verifies_only_under_the_name_and_keys_delegated_to_it():
    repo = Repo()
    repo.delegate("team", ["sensor/*/*"], lists=True)
    repo.delegate("other", ["other/*/*"])
    assert verifies(repo.top, "team", repo.roles["team"])
    assert not verifies(repo.top, "other", repo.roles["team"])
    assert not verifies(repo.top, "nobody", repo.roles["team"])
