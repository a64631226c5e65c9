"""Root metadata: publisher keys for root and targets, the hub's keys for snapshot and timestamp, thresholds kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root

from edgefleet.publisher.keys import init_keys, load_index, load_signers
from edgefleet.publisher.metadata import MetadataSigningError, make_root, sign_root

NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture
def hub_online():
    return {role: CryptoSigner.generate_ed25519() for role in ("snapshot", "timestamp")}


def test_root_lists_publisher_and_hub_keys_and_verifies(tmp_path, hub_online):
    keys = tmp_path / "keys"
    init_keys(keys, threshold=2, count=3)
    index = load_index(keys)
    root_md = make_root(index, {r: s.public_key for r, s in hub_online.items()}, now=NOW)
    signed = sign_root(root_md, load_signers(keys, "root")[:2])
    root = Metadata[Root].from_bytes(signed.to_bytes()).signed
    assert root.version == 1
    assert root.roles["root"].threshold == 2
    assert set(root.roles["root"].keyids) == {k.keyid for k in index["root"].keys}
    assert set(root.roles["targets"].keyids) == {k.keyid for k in index["targets"].keys}
    assert root.roles["snapshot"].keyids == [hub_online["snapshot"].public_key.keyid]
    assert root.roles["timestamp"].keyids == [hub_online["timestamp"].public_key.keyid]
    assert root.expires > NOW


def test_fewer_signatures_than_the_threshold_is_refused(tmp_path, hub_online):
    keys = tmp_path / "keys"
    init_keys(keys, threshold=2, count=3)
    root_md = make_root(load_index(keys), {r: s.public_key for r, s in hub_online.items()}, now=NOW)
    with pytest.raises(MetadataSigningError, match="root"):
        sign_root(root_md, load_signers(keys, "root")[:1])


def test_a_new_root_must_also_satisfy_the_trusted_root(tmp_path, hub_online):
    old, new = tmp_path / "old", tmp_path / "new"
    init_keys(old)
    init_keys(new)
    online = {r: s.public_key for r, s in hub_online.items()}
    trusted = sign_root(make_root(load_index(old), online, now=NOW), load_signers(old, "root")).signed
    rotated = make_root(load_index(new), online, now=NOW, version=2)
    with pytest.raises(MetadataSigningError):
        sign_root(rotated, load_signers(new, "root"), trusted=trusted)
    rotated = make_root(load_index(new), online, now=NOW, version=2)
    signed = sign_root(rotated, [*load_signers(old, "root"), *load_signers(new, "root")], trusted=trusted)
    assert signed.signed.version == 2


def test_rotated_root_needs_old_and_new_thresholds_and_leaves_the_trusted_root_alone(tmp_path, hub_online):
    from edgefleet.publisher.keys import stage_rotation
    from edgefleet.publisher.metadata import rotated_root

    keys = tmp_path / "keys"
    init_keys(keys)
    online = {r: s.public_key for r, s in hub_online.items()}
    current = sign_root(make_root(load_index(keys), online, now=NOW), load_signers(keys, "root")).signed
    before = current.to_dict()
    new_keys, new_signers = stage_rotation(keys, "root", threshold=2, count=2)

    with pytest.raises(MetadataSigningError):  # new keys alone: the trusted root's threshold is not met
        sign_root(rotated_root(current, "root", new_keys, now=NOW), new_signers, trusted=current)
    with pytest.raises(MetadataSigningError):  # old key alone: the new root's own threshold is not met
        sign_root(rotated_root(current, "root", new_keys, now=NOW), load_signers(keys, "root"), trusted=current)
    rotated = sign_root(
        rotated_root(current, "root", new_keys, now=NOW), load_signers(keys, "root") + new_signers, trusted=current
    )

    assert rotated.signed.version == 2
    assert set(rotated.signed.roles["root"].keyids) == {k.keyid for k in new_keys.keys}
    assert current.to_dict() == before
