"""Rotating the hub's online keys: recovery from a fast-forward attack, and a planned rotation under a running fleet.

The attacker holds the hub's online keys (read from its data dir) and serves a device
metadata with a version jump; the device is then stuck refusing the hub's honest, lower
versions. The recovery is the documented procedure: `hub keys rotate`, restart the hub,
and (for snapshot and timestamp) the publisher's root naming the new keys. Devices are the
agent's own `ReleaseVerifier` throughout, the hub is restarted through `open_hub`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fastapi.testclient import TestClient
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp
from tuf.ngclient import FetcherInterface

from edgefleet.agent.errors import UpdateRefusedError
from edgefleet.hub.api.app import create_app
from edgefleet.hub.errors import HubConfigError
from edgefleet.hub.lifecycle import open_hub
from edgefleet.hub.rotation import rotate_keys
from edgefleet.hub.services.operators import bootstrap_admin
from edgefleet.hub.settings import HubSettings
from edgefleet.publisher.online import name_online_keys
from edgefleet.publisher.rotation import PushRefusedError
from tests.conftest import FakeClock, Fleet
from tests.publishing import Device, Publisher, assign

pytestmark = pytest.mark.integration

JUMP = 1000


class Restarts:
    """Hub processes on one data dir and database: the first one, and each restart after `hub keys rotate`."""

    def __init__(self, settings: HubSettings, clock: FakeClock, stack: ExitStack) -> None:
        self.settings, self.clock, self.stack = settings, clock, stack

    def start(self) -> tuple[Any, TestClient]:
        hub = open_hub(self.settings, clock=self.clock, migrate=False)
        self.stack.callback(hub.store.dispose)
        return hub, self.stack.enter_context(TestClient(create_app(hub), raise_server_exceptions=False))

    def restart(self, fleet: Fleet) -> None:
        """Every process of the fleet's hub restarted: the new keys are loaded."""
        fleet.hub, fleet.api = self.start()


@pytest.fixture
def restarts(hub_keys_dir: Path, database_url: str, clock: FakeClock, tmp_path: Path) -> Iterator[Restarts]:
    data_dir = tmp_path / "hub"
    shutil.copytree(hub_keys_dir, data_dir)  # a data dir of its own: its keys are rotated
    settings = HubSettings(data_dir=data_dir, database_url=database_url, artifacts_dir=tmp_path / "artifacts")
    with ExitStack() as stack:
        yield Restarts(settings, clock, stack)


@pytest.fixture
def fleet(restarts: Restarts, clock: FakeClock, tmp_path: Path) -> Fleet:
    hub, api = restarts.start()
    return Fleet(api=api, hub=hub, admin=bootstrap_admin(hub), clock=clock, tmp=tmp_path)


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    return Publisher.create(fleet, tmp_path)


def data_dir(fleet: Fleet) -> Path:
    return fleet.hub.settings.data_dir


def stolen(fleet: Fleet, role: str) -> CryptoSigner:
    """The attacker's copy of an online key, read from the hub's data dir."""
    private = load_pem_private_key((data_dir(fleet) / "keys" / f"{role}.key").read_bytes(), None)
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def signed_bytes(signed: Targets | Snapshot | Timestamp, signer: CryptoSigner) -> bytes:
    metadata: Metadata[Any] = Metadata(signed)
    metadata.sign(signer)
    return json.dumps(metadata.to_dict()).encode()


def timestamp_naming(snapshot: bytes, *, signer: CryptoSigner) -> bytes:
    meta = MetaFile(JUMP, length=len(snapshot), hashes={"sha256": hashlib.sha256(snapshot).hexdigest()})
    return signed_bytes(Timestamp(version=JUMP, expires=soon(), snapshot_meta=meta), signer)


def soon() -> datetime:
    return (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)


class Forged(FetcherInterface):
    """The attacker answering some URLs itself (they need not exist on the hub); the hub answers the rest."""

    def __init__(self, inner: FetcherInterface, answers: dict[str, bytes]) -> None:
        self.inner, self.answers, self.hits = inner, answers, list[str]()

    def _fetch(self, url: str) -> Iterator[bytes]:
        for pattern, body in self.answers.items():
            if re.search(pattern, url):
                self.hits.append(url)
                return iter([body])
        return self.inner.fetch(url)


def forged(device: Device, answers: dict[str, bytes]) -> Forged:
    return Forged(device.fleet.device_client().fetcher(device.identity), answers)


def refused(device: Device, reason: str, *, installed: int | None = None, fetcher: Any = None) -> str:
    with pytest.raises(UpdateRefusedError) as caught:
        device.update("sensor", installed=installed, fetcher=fetcher)
    assert caught.value.reason == reason, caught.value
    return caught.value.message


def trusted(device: Device, repo: str, role: str) -> Metadata[Any]:
    return Metadata.from_bytes((device.trust.metadata_dir(repo) / f"{role}.json").read_bytes())


def push_root(fleet: Fleet) -> Callable[[str, dict[str, Any]], None]:
    def push(kind: str, body: dict[str, Any]) -> None:
        response = fleet.call("POST", f"/repository/{kind}", json=body)
        if response.status_code != 201:
            raise PushRefusedError(response.text)

    return push


def name_new_keys(fleet: Fleet, publisher: Publisher) -> int:
    """The publisher's part: `edgefleet repo rotate-online-keys`, through the library it runs."""
    hub_root = Metadata.from_dict(fleet.call("GET", "/repository/root").json())
    done = name_online_keys(
        publisher.keys, publisher.online_keys(), push_root(fleet), now=datetime.now(UTC), hub_root=hub_root
    )
    assert done.outcome == "pushed"
    return done.root_version


def keyid(fleet: Fleet, role: str) -> str:
    return fleet.hub.keys.online_signers[role].public_key.keyid


# --- 1. the incident of the issue: a version jump with the snapshot and timestamp keys ----------


def test_a_fast_forwarded_device_recovers_after_the_snapshot_and_timestamp_keys_are_rotated(
    fleet: Fleet, publisher: Publisher, restarts: Restarts, tmp_path: Path
) -> None:
    publisher.publish("sensor", "1.0.0")
    device = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    device.update("sensor")

    # The attacker, with the hub's snapshot and timestamp keys, jumps both to version 1000,
    # pointing at targets the publisher never signed (signed here with a key it happens to hold).
    snapshot_key, timestamp_key = stolen(fleet, "snapshot"), stolen(fleet, "timestamp")
    honest = Metadata[Targets].from_dict(fleet.call("GET", "/repository/targets").json()).signed
    evil_version = honest.version + 1
    honest.version = evil_version
    honest.targets["sensor/6.6.6/compose.yaml"] = TargetFile(4, {"sha256": "e" * 64}, "sensor/6.6.6/compose.yaml")
    evil_targets = signed_bytes(honest, snapshot_key)
    evil_snapshot = signed_bytes(
        Snapshot(version=JUMP, expires=soon(), meta={"targets.json": MetaFile(evil_version)}), snapshot_key
    )
    attack = forged(
        device,
        {
            r"/tuf/repository/timestamp\.json$": timestamp_naming(evil_snapshot, signer=timestamp_key),
            rf"/tuf/repository/{JUMP}\.snapshot\.json$": evil_snapshot,
            rf"/tuf/repository/{evil_version}\.targets\.json$": evil_targets,
        },
    )
    refused(device, "signature", installed=1, fetcher=attack)
    assert len(attack.hits) == 3, attack.hits
    assert trusted(device, "repository", "timestamp").signed.version == JUMP  # persisted before targets failed

    # "The database is restored": the hub's honest metadata again, far below the jump. Stuck...
    stamp = json.loads(fleet.device_call(device.identity, "GET", "/tuf/repository/timestamp.json").content)
    assert stamp["signed"]["version"] < 10
    assert "timestamp" in refused(device, "rollback_attack", installed=1)
    # ...even for a newly published release, and after a root that keeps the online keys.
    publisher.publish("sensor", "1.1.0")
    assert assign(fleet, device.id, "sensor@1.1.0").status_code == 200
    refused(device, "rollback_attack", installed=1)
    assert publisher.rotate("targets").root_version == 2
    refused(device, "rollback_attack", installed=1)

    # The procedure: rotate the hub's keys and restart it. Until the publisher's root names the
    # new keys, the hub signs with the old ones (the root names them) and the device stays stuck.
    old_keys = {role: keyid(fleet, role) for role in ("snapshot", "timestamp")}
    rotation = rotate_keys(data_dir(fleet), ["snapshot", "timestamp"])
    assert {k.role: k.retired_keyid for k in rotation.keys} == old_keys
    restarts.restart(fleet)
    new_keys = {role: keyid(fleet, role) for role in ("snapshot", "timestamp")}
    assert not set(new_keys.values()) & set(old_keys.values())
    refused(device, "rollback_attack", installed=1)

    assert name_new_keys(fleet, publisher) == 3
    publisher.publish("sensor", "1.2.0")
    assert assign(fleet, device.id, "sensor@1.2.0").status_code == 200
    release = device.update("sensor", installed=1)

    assert release.version == "1.2.0"
    root = trusted(device, "repository", "root").signed
    assert root.version == 3
    assert {role: root.roles[role].keyids for role in new_keys} == {r: [k] for r, k in new_keys.items()}
    stamp_now = trusted(device, "repository", "timestamp")
    assert stamp_now.signed.version < JUMP
    assert set(stamp_now.signatures) == {new_keys["timestamp"]}
    assert set(trusted(device, "repository", "snapshot").signatures) == {new_keys["snapshot"]}


# --- 2. the same with the director key -------------------------------------------------------


def test_a_fast_forwarded_director_recovers_after_the_director_key_is_rotated(
    fleet: Fleet, publisher: Publisher, restarts: Restarts, tmp_path: Path
) -> None:
    publisher.publish("sensor", "1.0.0")
    device = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    device.update("sensor")

    # The attacker replays the device's own assignment at version 1000, signed with the director key.
    director_key = stolen(fleet, "director")
    targets = (
        Metadata[Targets]
        .from_bytes(fleet.device_call(device.identity, "GET", "/tuf/director/targets.json").content)
        .signed
    )
    targets.version = JUMP
    evil_targets = signed_bytes(targets, director_key)
    evil_snapshot = signed_bytes(
        Snapshot(version=JUMP, expires=soon(), meta={"targets.json": MetaFile(JUMP)}), director_key
    )
    attack = forged(
        device,
        {
            r"/tuf/director/timestamp\.json$": timestamp_naming(evil_snapshot, signer=director_key),
            rf"/tuf/director/{JUMP}\.snapshot\.json$": evil_snapshot,
            rf"/tuf/director/{JUMP}\.targets\.json$": evil_targets,
        },
    )
    assert device.update("sensor", installed=1, fetcher=attack).version == "1.0.0"
    assert len(attack.hits) == 3
    assert trusted(device, "director", "timestamp").signed.version == JUMP

    # Honest again, the hub's director metadata is far below: every new assignment is refused.
    publisher.publish("sensor", "1.1.0")
    assert assign(fleet, device.id, "sensor@1.1.0").status_code == 200
    assert "timestamp" in refused(device, "rollback_attack", installed=1)

    old = keyid(fleet, "director")
    rotate_keys(data_dir(fleet), ["director"])
    refused(device, "rollback_attack", installed=1)  # rotated on disk, the running hub still has the old key
    restarts.restart(fleet)  # the restarted hub signs director root 2 with the old and the new key
    new = keyid(fleet, "director")
    release = device.update("sensor", installed=1)

    assert release.version == "1.1.0"
    root = trusted(device, "director", "root")
    assert root.signed.version == 2
    assert root.signed.roles["root"].keyids == [new]
    assert set(root.signatures) == {old, new}
    stamp = trusted(device, "director", "timestamp")
    assert stamp.signed.version < JUMP
    assert set(stamp.signatures) == {new}
    audit = [e for e in fleet.call("GET", "/audit").json() if e["action"] == "director.root.rotate"]
    assert [(e["actor"], e["detail"]) for e in audit] == [("system:hub", {"keyid": new, "previous_keyid": old})]


# --- 3. a planned rotation of all three keys with a running fleet ---------------------------------


def test_devices_keep_updating_through_a_planned_rotation_of_every_online_key(
    fleet: Fleet, publisher: Publisher, restarts: Restarts, tmp_path: Path
) -> None:
    publisher.publish("sensor", "1.0.0")
    devices = [Device.enroll(fleet, tmp_path) for _ in range(2)]
    for device in devices:
        assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
        device.update("sensor")
    counter = 1

    def everyone_updates(version: str) -> None:
        nonlocal counter
        publisher.publish("sensor", version)
        for device in devices:
            assert assign(fleet, device.id, f"sensor@{version}").status_code == 200
            assert device.update("sensor", installed=counter).version == version
        counter += 1

    old = {role: keyid(fleet, role) for role in ("director", "snapshot", "timestamp")}
    rotate_keys(data_dir(fleet), ["director", "snapshot", "timestamp"])
    everyone_updates("1.1.0")  # not restarted yet: the old keys, as before

    restarts.restart(fleet)
    new = {role: keyid(fleet, role) for role in old}
    everyone_updates("1.2.0")  # director rotated by the hub; snapshot, timestamp still the old keys
    for device in devices:
        assert trusted(device, "director", "root").signed.roles["root"].keyids == [new["director"]]
        assert set(trusted(device, "repository", "timestamp").signatures) == {old["timestamp"]}
    later = Device.enroll(fleet, tmp_path)  # enrolled mid-rotation: trusts director root 2 at once
    assert trusted(later, "director", "root").signed.version == 2
    devices.append(later)
    assert assign(fleet, later.id, "sensor@1.2.0").status_code == 200
    later.update("sensor")

    name_new_keys(fleet, publisher)
    # Signed anew in the same transaction as the root: nobody meets a timestamp by the old key.
    latest = Metadata.from_bytes(fleet.device_call(later.identity, "GET", "/tuf/repository/timestamp.json").content)
    assert set(latest.signatures) == {new["timestamp"]}
    everyone_updates("1.3.0")
    for device in devices:
        assert set(trusted(device, "repository", "timestamp").signatures) == {new["timestamp"]}
        assert set(trusted(device, "repository", "snapshot").signatures) == {new["snapshot"]}
        assert set(trusted(device, "director", "timestamp").signatures) == {new["director"]}
    # Once both roots name the new keys the retired ones are no longer needed.
    shutil.rmtree(data_dir(fleet) / "keys" / "retired")
    restarts.restart(fleet)
    everyone_updates("1.4.0")


# --- replicas and a data dir that lacks a key the roots name -----------------------------------


def test_a_replica_not_restarted_refuses_to_sign_with_keys_the_roots_no_longer_name(
    fleet: Fleet, publisher: Publisher, restarts: Restarts, tmp_path: Path
) -> None:
    publisher.publish("sensor", "1.0.0")
    device = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    device.update("sensor")
    stale_hub, stale_api = fleet.hub, fleet.api
    rotate_keys(data_dir(fleet), ["director", "snapshot", "timestamp"])
    restarts.restart(fleet)  # one replica restarted: it rotates the director root
    name_new_keys(fleet, publisher)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200

    stale = Fleet(api=stale_api, hub=stale_hub, admin=fleet.admin, clock=fleet.clock, tmp=tmp_path)
    before = stale.counts()
    # The director metadata must be re-signed for the new key: the stale replica cannot.
    answer = stale.device_call(device.identity, "GET", "/tuf/director/timestamp.json")
    assert (answer.status_code, answer.json()["code"]) == (503, "online_key_missing")
    assert "restart it" in answer.json()["message"]
    # Nor will it sign a snapshot with the old key once the publisher's root names the new one.
    build = publisher.build("sensor", "1.1.0")
    targets = publisher.sign(build)
    publisher.upload(build)
    pushed = stale.call("POST", "/repository/targets", json=targets)
    assert (pushed.status_code, pushed.json()["code"]) == (503, "online_key_missing")
    assert stale.counts() == {**before, "audit_log": before["audit_log"] + 1}  # the refusal, nothing else
    # The restarted replica serves the same device and takes the same push.
    assert fleet.call("POST", "/repository/targets", json=targets).status_code == 201
    assert device.update("sensor", installed=1).version == "1.0.0"


@pytest.mark.parametrize("role", ["snapshot", "director"])
def test_a_hub_refuses_to_start_without_a_retired_key_a_root_still_names(
    fleet: Fleet, publisher: Publisher, restarts: Restarts, role: str
) -> None:
    publisher.publish("sensor", "1.0.0")
    Device.enroll(fleet, fleet.tmp)  # fetches the director root: the hub signs version 1
    old = keyid(fleet, role)
    rotate_keys(data_dir(fleet), [role])
    (data_dir(fleet) / "keys" / "retired" / role / f"{old}.key").unlink()
    with pytest.raises(HubConfigError) as caught:
        restarts.restart(fleet)
    assert caught.value.code == "online_key_missing"
    assert old in caught.value.message
