"""Key rotation: devices that trusted the old root keep updating after root and targets keys change."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgefleet.publisher.errors import PublisherError
from edgefleet.publisher.keys import load_index
from edgefleet.publisher.rotation import PushRefusedError, rotate
from tests.conftest import Fleet
from tests.publishing import Device, Publisher, assign


def test_devices_follow_root_and_targets_rotation(fleet: Fleet, tmp_path: Path) -> None:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("sensor", "1.0.0")
    device = Device.enroll(fleet, tmp_path)  # trusts root version 1
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    device.update("sensor")
    old = load_index(publisher.keys)

    root_rotation = publisher.rotate("root", threshold=2, count=3)
    targets_rotation = publisher.rotate("targets")
    assert (root_rotation.root_version, targets_rotation.root_version) == (2, 3)
    assert targets_rotation.targets_version == 2  # the one release, re-signed with the new key
    publisher.publish("sensor", "1.1.0")
    assert assign(fleet, device.id, "sensor@1.1.0").status_code == 200

    release = device.update("sensor", installed=1)

    assert release.version == "1.1.0"
    trusted = json.loads((device.trust.metadata_dir("repository") / "root.json").read_text())["signed"]
    assert trusted["version"] == 3
    new = load_index(publisher.keys)
    assert set(trusted["roles"]["root"]["keyids"]) == {k.keyid for k in new["root"].keys}
    assert set(trusted["roles"]["targets"]["keyids"]) == {k.keyid for k in new["targets"].keys}
    assert not {k.keyid for k in old["targets"].keys} & set(trusted["roles"]["targets"]["keyids"])
    assert len(list((publisher.keys / "retired" / "root").glob("*.key"))) == 1


def test_a_refused_rotation_changes_nothing(fleet: Fleet, tmp_path: Path) -> None:
    publisher = Publisher.create(fleet, tmp_path)
    before = load_index(publisher.keys)

    def refuse(_kind: str, _body: dict[str, object]) -> None:
        raise PushRefusedError("hub said no")

    with pytest.raises(PushRefusedError):
        rotate(publisher.keys, "root", refuse, now=datetime.now(UTC))
    assert load_index(publisher.keys) == before
    assert not list((publisher.keys / "pending").rglob("*.key"))
    assert fleet.call("GET", "/repository/root").json()["signed"]["version"] == 1


def test_a_lost_answer_keeps_the_new_keys(fleet: Fleet, tmp_path: Path) -> None:
    """The hub may have stored the new root: its keys must not be thrown away."""
    publisher = Publisher.create(fleet, tmp_path)
    before = load_index(publisher.keys)

    def stored_then_lost(kind: str, body: dict[str, object]) -> None:
        assert fleet.call("POST", f"/repository/{kind}", json=body).status_code == 201
        raise OSError("connection reset")

    with pytest.raises(PublisherError, match="stay in"):
        rotate(publisher.keys, "root", stored_then_lost, now=datetime.now(UTC))
    assert fleet.call("GET", "/repository/root").json()["signed"]["version"] == 2
    pending = {p.stem for p in (publisher.keys / "pending" / "root").glob("*.key")}
    assert pending == set(fleet.call("GET", "/repository/root").json()["signed"]["roles"]["root"]["keyids"])
    assert load_index(publisher.keys) == before  # nothing switched behind the publisher's back
