"""The hub's image repository and director: what a push must satisfy, what is served to whom, freshness."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata

from edgefleet.publisher.keys import load_signers
from tests.conftest import Fleet
from tests.publishing import Device, Publisher, assign, resign


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    return Publisher.create(fleet, tmp_path)


def signed_targets(publisher: Publisher, change: Any, version: str = "9.0.0") -> dict[str, Any]:
    """The next targets (one new release) with `change` applied, properly signed by the publisher."""
    build = publisher.build("sensor", version)
    targets = publisher.sign(build)
    publisher.upload(build)
    key = load_signers(publisher.keys, "targets")[0]
    return json.loads(resign(json.dumps(targets).encode(), key, change))


def refused(fleet: Fleet, publisher: Publisher, targets: dict[str, Any], status: int, code: str) -> str:
    before = fleet.counts()
    response = publisher.push_targets(targets)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    after = fleet.counts()
    assert after == {**before, "audit_log": after["audit_log"]}, "a refused push stores nothing"
    return str(response.json()["message"])


def test_push_before_any_root_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    publisher = Publisher(fleet=fleet, tmp=tmp_path, keys=tmp_path / "k")
    from edgefleet.publisher.keys import init_keys

    init_keys(publisher.keys)
    build = publisher.build()
    refused(fleet, publisher, publisher.sign(build), 409, "no_root")


def test_targets_must_be_newer_and_unexpired(fleet: Fleet, publisher: Publisher) -> None:
    first = publisher.publish("sensor", "1.0.0")
    refused(fleet, publisher, first, 409, "wrong_version")
    message = refused(
        fleet, publisher, signed_targets(publisher, lambda s: s.update(expires="2020-01-01T00:00:00Z")), 409, "expired"
    )
    assert "expired" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["targets"]["sensor/9.0.0/compose.yaml"].update(length=5), "signed length 5"),
        (lambda s: s["targets"]["sensor/9.0.0/compose.yaml"]["hashes"].update(sha256="c" * 64), "was not uploaded"),
        (lambda s: s["targets"]["sensor/9.0.0/compose.yaml"]["hashes"].update(sha512="c" * 128), "exactly one hash"),
        (
            lambda s: s["targets"].update(
                {"../../etc/passwd": copy.deepcopy(s["targets"]["sensor/9.0.0/compose.yaml"])}
            ),
            "valid target",
        ),
        (
            lambda s: s["targets"]["sensor/9.0.0/compose.yaml"]["custom"]["edgefleet"].update(release_counter=0),
            "malformed",
        ),
        (
            lambda s: s["targets"]["sensor/9.0.0/compose.yaml"]["custom"]["edgefleet"].update(version="9.0.1"),
            "must be at sensor/9.0.1/compose.yaml",
        ),
        (
            lambda s: s["targets"]["sensor/9.0.0/compose.yaml"]["custom"]["edgefleet"].update(architectures=[]),
            "malformed",
        ),
    ],
)
def test_targets_that_do_not_check_out_are_refused_with_the_reason(
    fleet: Fleet, publisher: Publisher, change: Any, expected: str
) -> None:
    message = refused(fleet, publisher, signed_targets(publisher, change), 409, "targets_rejected")
    assert expected in message


def test_manifest_must_parse_and_name_its_release(fleet: Fleet, publisher: Publisher) -> None:
    bogus = b"services: {}\n"
    digest = hashlib.sha256(bogus).hexdigest()
    assert fleet.call("PUT", f"/repository/artifacts/{digest}", content=bogus).status_code == 201

    def swap(signed: dict[str, Any]) -> None:
        signed["targets"]["sensor/9.0.0/compose.yaml"].update(length=len(bogus), hashes={"sha256": digest})

    assert "services" in refused(fleet, publisher, signed_targets(publisher, swap), 409, "targets_rejected")


def test_published_releases_are_immutable_and_counters_rise(fleet: Fleet, publisher: Publisher) -> None:
    publisher.publish("sensor", "1.0.0")
    counter_zero = signed_targets(
        publisher, lambda s: s["targets"]["sensor/9.0.0/compose.yaml"]["custom"]["edgefleet"].update(release_counter=1)
    )
    assert "must be above 1" in refused(fleet, publisher, counter_zero, 409, "targets_rejected")

    def rewrite_old(signed: dict[str, Any]) -> None:
        signed["targets"]["sensor/1.0.0/compose.yaml"] = copy.deepcopy(signed["targets"]["sensor/9.1.0/compose.yaml"])
        signed["targets"]["sensor/1.0.0/compose.yaml"]["custom"]["edgefleet"]["version"] = "1.0.0"

    rewritten = signed_targets(publisher, rewrite_old, "9.1.0")
    assert "bump the version" in refused(fleet, publisher, rewritten, 409, "targets_rejected")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"signed": {"_type": "targets"}}, "invalid_metadata"),
        ({"signed": {"_type": "root"}, "signatures": []}, "invalid_metadata"),
        ([], "invalid_request"),
    ],
)
def test_malformed_targets_are_400(fleet: Fleet, publisher: Publisher, body: Any, code: str) -> None:
    response = fleet.call("POST", "/repository/targets", json=body)
    assert response.status_code in (400, 422)
    assert response.json()["code"] == code


def test_floats_are_refused(fleet: Fleet, publisher: Publisher) -> None:
    targets = signed_targets(publisher, None)
    targets["signed"]["targets"]["sensor/9.0.0/compose.yaml"]["custom"]["x"] = 1.5
    assert fleet.call("POST", "/repository/targets", json=targets).json()["code"] == "invalid_metadata"


def test_viewers_cannot_publish(fleet: Fleet, publisher: Publisher) -> None:
    viewer = fleet.operator_token("viewer")
    response = fleet.call("POST", "/repository/targets", viewer, json=signed_targets(publisher, None))
    assert response.status_code == 403
    response = fleet.call("PUT", f"/repository/artifacts/{'a' * 64}", viewer, content=b"x")
    assert response.status_code == 403


def test_artifact_upload_checks_digest_and_bound_and_leaves_nothing(fleet: Fleet) -> None:
    artifacts = fleet.hub.settings.artifacts_path()
    response = fleet.call("PUT", f"/repository/artifacts/{'a' * 64}", content=b"not those bytes")
    assert (response.status_code, response.json()["code"]) == (409, "digest_mismatch")
    assert [p for p in artifacts.rglob("*") if p.is_file()] == []
    assert fleet.call("PUT", "/repository/artifacts/..%2F..%2Fetc", content=b"x").status_code in (404, 422)
    data = b"y" * 1000
    ok = fleet.call("PUT", f"/repository/artifacts/{hashlib.sha256(data).hexdigest()}", content=data)
    assert ok.json() == {"sha256": hashlib.sha256(data).hexdigest(), "length": 1000}


def test_artifact_larger_than_the_bound_is_413_and_leaves_nothing(fleet: Fleet, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from edgefleet.hub.api.app import create_app
    from edgefleet.hub.context import Hub

    settings = fleet.hub.settings.model_copy(update={"max_artifact_bytes": 1024 * 1024})
    small = Hub(settings=settings, store=fleet.hub.store, keys=fleet.hub.keys, clock=fleet.clock)
    with TestClient(create_app(small), raise_server_exceptions=False) as client:
        big = b"z" * (1024 * 1024 + 1)

        def chunks() -> Any:
            yield big[:700_000]
            yield big[700_000:]

        response = client.put(
            f"/api/v1/repository/artifacts/{hashlib.sha256(big).hexdigest()}",
            content=chunks(),
            headers={"Authorization": f"Bearer {fleet.admin}"},
        )
    assert response.status_code == 413
    assert [p for p in settings.artifacts_path().rglob("*") if p.is_file()] == []


def test_artifacts_are_served_to_assigned_devices_with_ranges(
    fleet: Fleet, publisher: Publisher, tmp_path: Path
) -> None:
    targets = publisher.publish("sensor", "1.0.0")
    entry = targets["signed"]["targets"]["sensor/1.0.0/compose.yaml"]
    url = f"/tuf/repository/targets/sensor/1.0.0/{entry['hashes']['sha256']}.compose.yaml"
    device = Device.enroll(fleet, tmp_path)
    other = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200

    assert fleet.device_call(other.identity, "GET", url).json()["code"] == "artifact_not_assigned"
    full = fleet.device_call(device.identity, "GET", url)
    assert full.status_code == 200
    assert hashlib.sha256(full.content).hexdigest() == entry["hashes"]["sha256"]
    part = fleet.device_call(device.identity, "GET", url, headers={"Range": "bytes=10-"})
    assert (part.status_code, part.content) == (206, full.content[10:])
    assert fleet.call("GET", url).status_code == 200  # operators
    assert fleet.api.get(f"/api/v1{url}").status_code == 401  # nobody, on a private repository


@pytest.mark.parametrize(
    "name",
    [
        "0.root.json",
        "..%2Froot.json",
        "root.json.bak",
        "1.timestamp.json",
        "x" * 40,
        "99.root.json",
        "1.director-root.json",
        "director-root.json",
        "1.team.json",
        "1.Team.json",
        "x" * 70,
    ],
)
def test_unknown_metadata_names_are_404(fleet: Fleet, publisher: Publisher, name: str) -> None:
    assert fleet.call("GET", f"/tuf/repository/{name}").status_code in (404, 422)


def test_timestamp_and_snapshot_are_resigned_before_they_expire(fleet: Fleet, publisher: Publisher) -> None:
    publisher.publish("sensor", "1.0.0")

    def current(role: str) -> Any:
        name = "timestamp.json" if role == "timestamp" else f"{role}.json"
        return Metadata.from_bytes(fleet.call("GET", f"/tuf/repository/{name}").content).signed

    first = current("timestamp")
    fleet.clock.advance(timedelta(hours=11))
    assert current("timestamp").version == first.version  # more than half its lifetime left
    fleet.clock.advance(timedelta(hours=2))
    refreshed = current("timestamp")
    assert refreshed.version == first.version + 1
    assert refreshed.expires > fleet.clock.now + timedelta(hours=23)
    snapshot = current("snapshot")
    fleet.clock.advance(timedelta(days=4))
    current("timestamp")
    assert current("snapshot").version == snapshot.version + 1


def test_versioned_files_are_read_once_per_process_and_new_versions_served_at_once(
    fleet: Fleet, publisher: Publisher
) -> None:
    from tests.integration.hub.test_device_cache import statements_of

    publisher.publish("sensor", "1.0.0")

    def snapshot_named() -> int:
        stamp = Metadata.from_bytes(fleet.call("GET", "/tuf/repository/timestamp.json").content).signed
        return int(stamp.snapshot_meta.version)

    version = snapshot_named()
    first = fleet.call("GET", f"/tuf/repository/{version}.snapshot.json")
    assert first.status_code == 200
    statements = statements_of(fleet.hub)
    again = fleet.call("GET", f"/tuf/repository/{version}.snapshot.json")
    assert again.content == first.content
    assert not [s for s in statements if "repo_metadata" in s], "a versioned file is read once"
    publisher.publish("sensor", "2.0.0")  # a new snapshot version: named and served at once
    assert snapshot_named() == version + 1
    newer = Metadata.from_bytes(fleet.call("GET", f"/tuf/repository/{version + 1}.snapshot.json").content)
    assert newer.signed.version == version + 1
    assert fleet.call("GET", f"/tuf/repository/{version + 2}.snapshot.json").status_code == 404


def test_assign_checks_device_release_and_architecture(fleet: Fleet, publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish("sensor", "1.0.0", architectures="[amd64]")
    device = Device.enroll(fleet, tmp_path)  # arm64
    response = assign(fleet, device.id, "sensor@1.0.0")
    assert (response.status_code, response.json()["code"]) == (409, "architecture_unsupported")
    assert assign(fleet, device.id, "sensor@2.0.0").json()["code"] == "release_not_found"
    missing = assign(fleet, "00000000-0000-4000-8000-000000000000", "sensor@1.0.0")
    assert missing.json()["code"] == "device_not_found"
    pending = fleet.enroll(fleet.enrollment_token(require_approval=True))
    assert assign(fleet, pending.device_id, "sensor@1.0.0").json()["code"] == "device_not_accepted"
    viewer = fleet.operator_token("viewer")
    body = {"app": "sensor", "version": "1.0.0"}
    assert fleet.call("POST", f"/devices/{device.id}/assignments", viewer, json=body).status_code == 403


def test_assignments_are_audited_and_listed(fleet: Fleet, publisher: Publisher, tmp_path: Path) -> None:
    publisher.publish("sensor", "1.0.0")
    publisher.publish("analytics", "0.3.0")
    device = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    assert assign(fleet, device.id, "analytics@0.3.0").status_code == 200

    listed = fleet.call("GET", f"/devices/{device.id}/assignments").json()
    assert [(a["app"], a["version"]) for a in listed] == [("analytics", "0.3.0"), ("sensor", "1.0.0")]
    entries = [e for e in fleet.call("GET", "/audit").json() if e["action"] == "device.assign"]
    assert {e["detail"]["app"] for e in entries} == {"sensor", "analytics"}
    director = Metadata.from_bytes(fleet.device_call(device.identity, "GET", "/tuf/director/targets.json").content)
    assert sorted(director.signed.targets) == ["analytics/0.3.0/compose.yaml", "sensor/1.0.0/compose.yaml"]


def test_a_published_releases_bundles_cannot_change(fleet: Fleet, publisher: Publisher) -> None:
    publisher.publish("sensor", "1.0.0", bundle=True)
    other = b"other image bytes"
    digest = hashlib.sha256(other).hexdigest()
    assert fleet.call("PUT", f"/repository/artifacts/{digest}", content=other).status_code == 201

    def swap_bundle(signed: dict[str, Any]) -> None:
        bundle = next(p for p in signed["targets"] if p.startswith("sensor/1.0.0/images/"))
        signed["targets"][bundle].update(length=len(other), hashes={"sha256": digest})

    message = refused(fleet, publisher, signed_targets(publisher, swap_bundle), 409, "targets_rejected")
    assert "bump the version" in message
