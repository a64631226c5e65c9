"""The publisher's half of a hub key rotation: the next root names the hub's new keys, recorded only once pushed."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner, Key
from tuf.api.metadata import Metadata, Root

from edgefleet.publisher.errors import AnswerLostError, PublisherError
from edgefleet.publisher.keys import init_keys, load_index, load_signers
from edgefleet.publisher.metadata import make_root, sign_root
from edgefleet.publisher.online import name_online_keys
from edgefleet.publisher.rotation import PushRefusedError
from edgefleet.publisher.state import load_root, save_root

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def online_keys() -> dict[str, Key]:
    return {role: CryptoSigner.generate_ed25519().public_key for role in ("director", "snapshot", "timestamp")}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    init_keys(directory, threshold=2, count=3)
    save_root(
        directory, sign_root(make_root(load_index(directory), online_keys(), now=NOW), load_signers(directory, "root"))
    )
    return directory


class Hub:
    """Stands in for the hub's push endpoint: keeps what it was sent, or fails as told."""

    def __init__(self, failure: BaseException | None = None, *, store_anyway: bool = False) -> None:
        self.failure, self.store_anyway = failure, store_anyway
        self.roots: list[dict[str, Any]] = []

    def push(self, kind: str, body: dict[str, Any]) -> None:
        assert kind == "root"
        if self.failure is None or self.store_anyway:
            self.roots.append(body)
        if self.failure is not None:
            raise self.failure


def test_the_next_root_names_the_new_keys_meets_both_thresholds_and_is_recorded(keys: Path) -> None:
    current = load_root(keys)
    new = online_keys()
    hub = Hub()

    done = name_online_keys(keys, new, hub.push, now=NOW)

    assert (done.outcome, done.root_version) == ("pushed", 2)
    assert done.keyids == {role: new[role].keyid for role in ("snapshot", "timestamp")}
    pushed = Metadata[Root].from_dict(copy.deepcopy(hub.roots[0]))
    root = pushed.signed
    assert {role: root.roles[role].keyids for role in ("snapshot", "timestamp")} == {
        role: [new[role].keyid] for role in ("snapshot", "timestamp")
    }
    for role in ("root", "targets"):
        assert root.roles[role] == current.signed.roles[role]
    current.signed.verify_delegate(Root.type, pushed.signed_bytes, pushed.signatures)
    root.verify_delegate(Root.type, pushed.signed_bytes, pushed.signatures)
    assert load_root(keys).to_dict() == hub.roots[0]
    # Run again: the record names the keys now, so nothing is pushed.
    again = name_online_keys(keys, new, hub.push, now=NOW)
    assert (again.outcome, again.root_version, len(hub.roots)) == ("unchanged", 2, 1)


def test_a_refused_push_records_nothing(keys: Path) -> None:
    before = (keys / "repository" / "root.json").read_bytes()
    with pytest.raises(PushRefusedError):
        name_online_keys(keys, online_keys(), Hub(PushRefusedError("online_keys_mismatch")).push, now=NOW)
    assert (keys / "repository" / "root.json").read_bytes() == before


def test_a_lost_answer_is_recorded_on_the_next_run_when_the_hub_holds_our_root(keys: Path) -> None:
    new = online_keys()
    hub = Hub(OSError("connection reset"), store_anyway=True)
    with pytest.raises(AnswerLostError, match="run the command again"):
        name_online_keys(keys, new, hub.push, now=NOW)
    assert load_root(keys).signed.version == 1
    held = Metadata[Root].from_dict(copy.deepcopy(hub.roots[0]))

    done = name_online_keys(keys, new, Hub(AssertionError("nothing to push")).push, now=NOW, hub_root=held)

    assert (done.outcome, done.root_version) == ("recorded", 2)
    assert load_root(keys).to_dict() == held.to_dict()


def test_a_hub_root_not_signed_by_our_root_keys_is_never_recorded(keys: Path, tmp_path: Path) -> None:
    new = online_keys()
    stranger = tmp_path / "stranger"
    init_keys(stranger)
    forged = make_root(load_index(stranger), new, now=NOW, version=2)
    forged = sign_root(forged, load_signers(stranger, "root"))
    hub = Hub()

    done = name_online_keys(keys, new, hub.push, now=NOW, hub_root=forged)

    assert done.outcome == "pushed"
    assert load_root(keys).to_dict() == hub.roots[0] != forged.to_dict()


def test_a_key_directory_without_a_repository_or_keys_from_the_hub_without_a_role(keys: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    init_keys(bare)
    with pytest.raises(PublisherError, match="has not initialised a repository"):
        name_online_keys(bare, online_keys(), Hub().push, now=NOW)
    with pytest.raises(PublisherError, match="no timestamp key"):
        name_online_keys(keys, {"snapshot": online_keys()["snapshot"]}, Hub().push, now=NOW)
