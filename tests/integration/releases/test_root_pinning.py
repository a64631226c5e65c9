"""A new device trusts the image repository's root it was provisioned with, never the one a compromised hub hands it.

The hub here serves a repository whose root and targets an attacker made (the attacker holds
the hub, so its online keys too). The device was provisioned with the real publisher's root,
as a file or as a digest; only `trust_first_root` would take the hub's word.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.agent.errors import UpdateRefusedError
from edgefleet.agent.trust import RootPin, RootTrustError, establish, infer_trust, load_trust
from edgefleet.agent.truststore import TrustStore
from edgefleet.publisher.keys import init_keys, load_index, load_signers
from edgefleet.publisher.metadata import make_root, sign_root
from edgefleet.releases import root_digest
from tests.conftest import Fleet
from tests.publishing import Device, Publisher, assign


def provisioned(fleet: Fleet, tmp_path: Path, pin: RootPin) -> Device:
    """A device enrolled with the hub whose trust store was set up as the agent does it, by `pin`."""
    identity = fleet.enroll()
    device = Device(fleet=fleet, identity=identity, state=tmp_path / f"state-{identity.device_id[:8]}")
    assert establish(fleet.device_client(), identity, device.trust, pin) == pin.mode
    return device


@pytest.fixture
def real_root(fleet: Fleet, tmp_path: Path) -> bytes:
    """The root the real publisher signed (naming the hub's online keys) and provisioned devices with."""
    keys = tmp_path / "real-publisher"
    init_keys(keys)
    online = Publisher(fleet=fleet, tmp=tmp_path, keys=keys).online_keys()
    return sign_root(make_root(load_index(keys), online, now=fleet.clock()), load_signers(keys, "root")).to_bytes()


@pytest.fixture
def attacker(fleet: Fleet, tmp_path: Path) -> Publisher:
    """Whoever holds the hub made its image repository, and publishes what they like in it."""
    made = Publisher.create(fleet, tmp_path / "attacker")
    made.publish("sensor", "6.6.6")
    return made


def test_a_pinned_root_file_is_trusted_not_the_hubs(
    fleet: Fleet, tmp_path: Path, real_root: bytes, attacker: Publisher
) -> None:
    device = provisioned(fleet, tmp_path, RootPin(root=real_root))
    assert load_trust(device.trust.root) == "pinned"
    assert (device.trust.metadata_dir("repository") / "root.json").read_bytes() == real_root
    assert assign(fleet, device.id, "sensor@6.6.6").status_code == 200
    with pytest.raises(UpdateRefusedError) as refused:
        device.update("sensor")
    assert refused.value.reason == "signature"  # the attacker's targets are not signed by the pinned root's keys


def test_a_pinned_digest_no_hub_root_has_refuses_to_start(
    fleet: Fleet, tmp_path: Path, real_root: bytes, attacker: Publisher
) -> None:
    with pytest.raises(RootTrustError, match="none of the hub's 1 image-repository root versions"):
        provisioned(fleet, tmp_path, RootPin(sha256=root_digest(real_root)))


def test_trust_on_first_use_takes_the_hubs_root_only_when_asked(
    fleet: Fleet, tmp_path: Path, attacker: Publisher
) -> None:
    with pytest.raises(RootTrustError, match="no pinned image-repository root"):
        provisioned(fleet, tmp_path, RootPin())
    device = provisioned(fleet, tmp_path, RootPin(first_use=True))
    assert load_trust(device.trust.root) == "first-use"
    assert assign(fleet, device.id, "sensor@6.6.6").status_code == 200
    assert device.update("sensor").version == "6.6.6"  # what the pin prevents: the hub's word was taken


def test_a_pinned_digest_finds_its_root_among_the_hubs_versions(fleet: Fleet, tmp_path: Path) -> None:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.rotate("root")
    second = (publisher.keys / "repository" / "root.json").read_bytes()
    publisher.publish("sensor", "1.0.0")
    device = provisioned(fleet, tmp_path, RootPin(sha256=root_digest(second)))
    assert load_trust(device.trust.root) == "pinned"
    trusted = device.trust.metadata_dir("repository") / "root.json"
    assert root_digest(trusted.read_bytes()) == root_digest(second)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    assert device.update("sensor").version == "1.0.0"
    # A root file and a digest that disagree are refused before anything is trusted.
    first = fleet.call("GET", "/repository/root/1").content
    with pytest.raises(RootTrustError, match="does not have the pinned"):
        provisioned(fleet, tmp_path, RootPin(root=first, sha256=root_digest(second)))


def test_a_device_from_before_pinning_is_marked_by_what_it_trusts(fleet: Fleet, tmp_path: Path) -> None:
    publisher = Publisher.create(fleet, tmp_path)
    device = Device.enroll(fleet, tmp_path)  # bootstrapped as agents did before: the hub's root, nothing recorded
    assert load_trust(device.trust.root) is None
    real = (publisher.keys / "repository" / "root.json").read_bytes()
    trusted = [p.read_bytes() for p in (device.trust.metadata_dir("repository") / "root_history").iterdir()]
    assert infer_trust(trusted, RootPin(root=real)) == "pinned"
    assert infer_trust(trusted, RootPin(sha256="0" * 64)) == "first-use"
    assert infer_trust(trusted, RootPin()) == "first-use"
    mode = establish(fleet.device_client(), device.identity, TrustStore(device.state / "tuf"), RootPin(root=real))
    assert (mode, load_trust(device.trust.root)) == ("pinned", "pinned")
