"""Signed releases end to end in-process: publisher keys -> build -> sign -> push -> assign -> device verifies."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Fleet
from tests.publishing import Device, Publisher, assign


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    return Publisher.create(fleet, tmp_path)


def test_round_trip_device_downloads_and_verifies(fleet: Fleet, publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish("sensor", "1.0.0")
    device = Device.enroll(fleet, tmp_path)
    response = assign(fleet, device.id, "sensor@1.0.0")
    assert response.status_code == 200, response.text

    release = device.update("sensor")

    assert (release.app, release.version, release.release_counter) == ("sensor", "1.0.0", 1)
    assert release.manifest.services[0].name == "main"
    assert (release.directory / "compose.yaml").read_bytes() == (
        tmp_path / "build-sensor-1.0.0/compose.yaml"
    ).read_bytes()


def test_release_list_shows_signers(fleet: Fleet, publisher: Publisher) -> None:
    targets = publisher.publish("sensor", "1.0.0")
    publisher.publish("sensor", "1.1.0")
    rows = fleet.call("GET", "/repository/releases").json()
    assert [(r["app"], r["version"], r["release_counter"]) for r in rows] == [
        ("sensor", "1.1.0", 2),
        ("sensor", "1.0.0", 1),
    ]
    assert rows[1]["signer_keyids"] == sorted(targets["signatures"][0]["keyid"] for _ in [0])
    assert rows[0]["architectures"] == ["amd64", "arm64"]
