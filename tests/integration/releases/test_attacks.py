"""Attacks on the update path: each refused with a specific reason, and nothing left in the install area.

The attacker sits between device and hub (or is the hub, holding its online keys): the
`Tamper` fetcher rewrites answers; `resign` forges metadata with a key of the attacker's
choosing. The device side is the agent's own verification library throughout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner

from edgefleet.agent.errors import UpdateRefusedError
from edgefleet.hub.artifacts import ArtifactStore
from edgefleet.publisher.keys import load_signers
from edgefleet.releases import DEVICE_FIELD
from tests.conftest import Fleet
from tests.publishing import Device, Publisher, Tamper, assign, endless, resign

MANIFEST_URL = r"/tuf/repository/targets/sensor/1\.\d\.0/[0-9a-f]{64}\.compose\.yaml$"
BUNDLE_URL = r"/tuf/repository/targets/sensor/1\.0\.0/images/"


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    return Publisher.create(fleet, tmp_path)


@pytest.fixture
def device(fleet: Fleet, publisher: Publisher, tmp_path: Path) -> Device:
    publisher.publish("sensor", "1.0.0", bundle=True)
    device = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    return device


def refused(
    device: Device, reason: str, rules: dict[str, Callable[[bytes], Any]], *, replay: bool = False, **kwargs: Any
) -> Tamper:
    tamper = Tamper(device.fleet.device_client().fetcher(device.identity), rules, replay=replay)
    before = device.installed_files()
    with pytest.raises(UpdateRefusedError) as caught:
        device.update("sensor", fetcher=tamper, **kwargs)
    assert caught.value.reason == reason, caught.value
    assert tamper.hits, "the attack never happened"
    assert device.installed_files() == before
    assert not list(device.apps.glob("**/.staging-*"))
    return tamper


def flip(data: bytes) -> bytes:
    return data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]


def test_untampered_bundle_release_installs(device: Device) -> None:
    release = device.update("sensor")
    assert [p.name for p in (release.directory / "images").iterdir()] == [f"sha256-{'a' * 64}.tar"]


def test_tampered_artifact(device: Device) -> None:
    refused(device, "hash_mismatch", {BUNDLE_URL: flip})


def test_tampered_manifest(device: Device) -> None:
    refused(device, "hash_mismatch", {MANIFEST_URL: lambda d: d.replace(b"unless-stopped", b"always        ")})


def test_artifact_longer_than_signed(device: Device) -> None:
    refused(device, "too_large", {BUNDLE_URL: endless})


def test_an_artifact_refused_for_its_length_leaves_no_partial_file(device: Device, fleet: Fleet) -> None:
    # The hub (compromised, or its disk) serves a bundle longer than signed, on the agent's resumable fetcher.
    release = fleet.call("GET", "/repository/releases").json()[0]
    for digest in release["artifacts"][1:]:
        with ArtifactStore(fleet.hub.settings.artifacts_path()).path(digest).open("ab") as artifact:
            artifact.write(b"x" * 256 * 1024)
    partial = device.state / "partial"
    fetcher = fleet.device_client().fetcher(device.identity, partial_dir=partial)
    with pytest.raises(UpdateRefusedError) as refused:
        device.update("sensor", fetcher=fetcher)
    assert refused.value.reason == "too_large"
    assert list(partial.iterdir()) == []  # at the refusal, not at the next attempt


def test_metadata_larger_than_its_bound(device: Device) -> None:
    refused(device, "too_large", {r"/tuf/repository/timestamp\.json$": endless})


def test_director_metadata_larger_than_its_bound(device: Device) -> None:
    refused(device, "too_large", {r"/tuf/director/\d+\.targets\.json$": endless})


def test_targets_signed_by_unknown_key(device: Device) -> None:
    stranger = CryptoSigner.generate_ed25519()
    refused(device, "signature", {r"/tuf/repository/\d+\.targets\.json$": lambda d: resign(d, stranger)})


def test_targets_push_signed_by_unknown_key_is_refused_by_the_hub(fleet: Fleet, publisher: Publisher) -> None:
    build = publisher.build("sensor", "2.0.0")
    targets = publisher.sign(build)
    publisher.upload(build)
    forged = json.loads(resign(json.dumps(targets).encode(), CryptoSigner.generate_ed25519()))
    before = fleet.counts()
    response = publisher.push_targets(forged)
    assert response.status_code == 403
    assert response.json()["code"] == "signature_threshold"
    assert fleet.counts() == {**before, "audit_log": before["audit_log"] + 1}


def test_fewer_signatures_than_threshold(fleet: Fleet, tmp_path: Path) -> None:
    publisher = Publisher.create(fleet, tmp_path, threshold=2)
    publisher.publish("sensor", "1.0.0")
    device = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    one_key = load_signers(publisher.keys, "targets")[0]

    # The hub refuses a push with one of two signatures...
    build = publisher.build("sensor", "1.1.0")
    targets = publisher.sign(build)
    publisher.upload(build)
    half = json.loads(resign(json.dumps(targets).encode(), one_key))
    response = publisher.push_targets(half)
    assert (response.status_code, response.json()["code"]) == (403, "signature_threshold")
    # ...and so does a device shown one.
    refused(device, "signature", {r"/tuf/repository/\d+\.targets\.json$": lambda d: resign(d, one_key)})


def test_expired_timestamp_freeze(fleet: Fleet, tmp_path: Path) -> None:
    fleet.clock.advance(-timedelta(days=3))  # the hub signed everything three days ago...
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("sensor", "1.0.0")
    device = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    frozen = fleet.device_call(device.identity, "GET", "/tuf/repository/timestamp.json").content
    fleet.clock.advance(timedelta(days=3))
    # ...and an attacker keeps serving that (validly signed, long expired) timestamp.
    refused(device, "expired", {r"/tuf/repository/timestamp\.json$": lambda _d: frozen})


def test_older_timestamp_replayed(device: Device, publisher: Publisher, fleet: Fleet) -> None:
    old = fleet.device_call(device.identity, "GET", "/tuf/repository/timestamp.json").content
    device.update("sensor")
    publisher.publish("sensor", "1.1.0")
    assert assign(fleet, device.id, "sensor@1.1.0").status_code == 200
    device.update("sensor", installed=1)  # the device now trusts a newer timestamp
    refused(device, "rollback_attack", {r"/tuf/repository/timestamp\.json$": lambda _d: old}, installed=2)


def test_older_snapshot_replayed(device: Device, publisher: Publisher, fleet: Fleet) -> None:
    old = fleet.device_call(device.identity, "GET", "/tuf/repository/1.snapshot.json").content
    publisher.publish("sensor", "1.1.0")
    refused(device, "hash_mismatch", {r"/tuf/repository/\d+\.snapshot\.json$": lambda _d: old})


def test_director_hashes_differ_from_image_repository(device: Device, fleet: Fleet) -> None:
    director_key = fleet.hub.keys.online_signers["director"]

    def other_hash(signed: dict[str, Any]) -> None:
        for target in signed["targets"].values():
            target["hashes"]["sha256"] = "b" * 64

    refused(
        device,
        "mix_and_match",
        {r"/tuf/director/\d+\.targets\.json$": lambda d: resign(d, director_key, other_hash)},
    )


def test_director_signed_by_wrong_key(device: Device) -> None:
    stranger = CryptoSigner.generate_ed25519()
    refused(device, "signature", {r"/tuf/director/\d+\.targets\.json$": lambda d: resign(d, stranger)})


def test_another_devices_director_metadata(device: Device, fleet: Fleet, tmp_path: Path) -> None:
    other = Device.enroll(fleet, tmp_path)
    assert assign(fleet, other.id, "sensor@1.0.0").status_code == 200
    theirs = fleet.device_call(other.identity, "GET", "/tuf/director/targets.json")
    assert theirs.status_code == 200
    assert json.loads(theirs.content)["signed"]["targets"], "the other device's assignment is in it"
    # Same version as the device's own (both: empty at enrollment, then one assignment).
    refused(device, "wrong_device", {r"/tuf/director/\d+\.targets\.json$": lambda _d: theirs.content})


def test_another_devices_newer_director_metadata_never_jams_the_device(
    device: Device, publisher: Publisher, fleet: Fleet, tmp_path: Path
) -> None:
    assert device.update("sensor").version == "1.0.0"
    trusted = device.trust.metadata_dir("director") / "targets.json"
    before = trusted.read_bytes()
    # The other device's director metadata is at higher versions than this device's own...
    publisher.publish("sensor", "1.1.0")
    other = Device.enroll(fleet, tmp_path)
    for version in ("1.0.0", "1.1.0", "1.0.0", "1.1.0"):
        assert assign(fleet, other.id, f"sensor@{version}", rollback=True).status_code == 200
        fleet.device_call(other.identity, "GET", "/tuf/director/timestamp.json")  # signed when asked for
    theirs = {
        role: fleet.device_call(other.identity, "GET", f"/tuf/director/{role}.json").content
        for role in ("timestamp", "snapshot", "targets")
    }
    ours = json.loads(fleet.device_call(device.identity, "GET", "/tuf/director/targets.json").content)
    assert json.loads(theirs["targets"])["signed"]["version"] > ours["signed"]["version"]
    # ...all validly signed by the director: a replay of them is refused for what it says...
    refused(
        device,
        "wrong_device",
        {rf"/tuf/director/(\d+\.)?{role}\.json$": lambda _d, role=role: theirs[role] for role in theirs},
        replay=True,
    )
    # ...and none of it was kept: the device goes on with its own, lower versions.
    assert trusted.read_bytes() == before
    assert json.loads(before)["signed"][DEVICE_FIELD] == device.id
    assert assign(fleet, device.id, "sensor@1.1.0").status_code == 200
    assert device.update("sensor").version == "1.1.0"


def test_director_metadata_is_served_only_to_its_device(device: Device, fleet: Fleet) -> None:
    response = fleet.call("GET", "/tuf/director/timestamp.json")  # an operator token
    assert response.status_code == 401


def test_older_release_without_rollback_mark(device: Device, publisher: Publisher, fleet: Fleet) -> None:
    naming_1_0 = fleet.device_call(device.identity, "GET", "/tuf/director/targets.json").content
    publisher.publish("sensor", "1.1.0")
    director_key = fleet.hub.keys.online_signers["director"]
    # The hub itself refuses to assign an older release unless told it is a rollback.
    response = assign(fleet, device.id, "sensor@1.0.0")
    assert response.status_code == 200  # 1.0.0 is the current assignment: not older
    assert assign(fleet, device.id, "sensor@1.1.0").status_code == 200
    refusal = assign(fleet, device.id, "sensor@1.0.0")
    assert (refusal.status_code, refusal.json()["code"]) == (409, "rollback_required")

    # A director that names 1.0.0 without the mark (compromised hub) is refused by the device.
    assert b"1.0.0" in naming_1_0

    def old_assignment(legit: bytes) -> bytes:
        version = json.loads(legit)["signed"]["version"]
        return resign(naming_1_0, director_key, lambda signed: signed.update(version=version))

    refused(device, "release_rollback", {r"/tuf/director/\d+\.targets\.json$": old_assignment}, installed=2)


def test_rollback_marked_by_the_director_is_accepted(device: Device, publisher: Publisher, fleet: Fleet) -> None:
    publisher.publish("sensor", "1.1.0")
    assert assign(fleet, device.id, "sensor@1.1.0").status_code == 200
    response = assign(fleet, device.id, "sensor@1.0.0", rollback=True)
    assert response.status_code == 200
    assert response.json()["rollback"] is True
    release = device.update("sensor", installed=2)
    assert (release.version, release.rollback) == ("1.0.0", True)


HOST_PATH_ESCAPES = ("host-read://etc", "host-write://", "host-write:/./var/spool/cron/", "host-read:/var")


@pytest.mark.parametrize("permission", HOST_PATH_ESCAPES)
def test_a_signed_release_sharing_a_denied_host_path_is_refused_by_the_hub(
    fleet: Fleet, publisher: Publisher, permission: str
) -> None:
    # A publisher tool that let the spelling through (or one that never checked) signs it all the same.
    build = publisher.build("sensor", "2.0.0")
    manifest = (build / "compose.yaml").read_text()
    (build / "compose.yaml").write_text(
        manifest.replace("pids: 64}", f'pids: 64}}\n      permissions: ["{permission}"]')
    )
    assert permission in (build / "compose.yaml").read_text()
    targets = publisher.sign(build)
    publisher.upload(build)
    before = fleet.counts()
    response = publisher.push_targets(targets)
    assert (response.status_code, response.json()["code"]) == (409, "targets_rejected"), response.text
    assert "cannot be shared" in response.json()["message"]
    assert fleet.counts() == {**before, "audit_log": before["audit_log"] + 1}
    assert fleet.call("GET", "/repository/releases").json() == []
