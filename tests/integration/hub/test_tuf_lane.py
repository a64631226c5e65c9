"""The fast lane answers an update's TUF requests as the routes do, from memory when it can.

`hub.api.tuflane` answers the metadata files and artifacts of an update from this
process's memory: versioned files (they never change), the roots' newest versions and the
image repository's timestamp (forgotten whenever any hub process stores metadata), and the
artifacts of the releases the device's cached target answer names; what it does not hold it
reads as the route would, through the same service functions. Each test sends the same
request to the hub's app and to an app of the same hub without the lane, and compares
status, headers and bytes; where the lane must answer, the TUF routes are broken meanwhile.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from starlette.responses import FileResponse

from edgefleet.agent.identity import LocalIdentity
from edgefleet.hub.api import tuflane
from edgefleet.hub.api.routes import tuf as tuf_routes
from edgefleet.hub.artifacts import ArtifactStore
from edgefleet.hub.db.listen import CHANNEL
from edgefleet.hub.services import director, metadata
from tests.conftest import Fleet, auth
from tests.integration.hub.test_device_cache import PROPAGATION_SECONDS, other, statements_of, within
from tests.integration.hub.test_fast_lane import answer_of, routes_only
from tests.integration.hub.test_push import admin_dsn, assign, postgres_only
from tests.integration.hub.test_push import publisher as publisher  # a fixture: one release, published
from tests.publishing import Publisher

pytestmark = pytest.mark.integration
__all__ = ["other", "routes_only"]  # fixtures used here

TUF = "/api/v1/tuf"


@dataclass(frozen=True)
class Update:
    """A device that verified its assigned release, and the names of what it fetched."""

    device: LocalIdentity
    director_snapshot: str
    director_targets: str
    repository_snapshot: str
    repository_targets: str
    manifest: str


def get(client: TestClient, fleet: Fleet, device: LocalIdentity, path: str, **headers: str) -> Any:
    return client.get(f"{TUF}/{path}", headers={**auth(device.token(now=fleet.clock())), **headers})


@pytest.fixture
def update(fleet: Fleet, publisher: Publisher) -> Update:
    """An enrolled device assigned sensor@1.0.0 that fetched what its agent fetches to verify it."""
    device = fleet.enroll()
    assert assign(fleet, device.device_id, "sensor@1.0.0").status_code == 200
    assert fleet.device_call(device, "GET", "/device/target").status_code == 200
    fetched = {
        path: get(fleet.api, fleet, device, path) for path in ("director/timestamp.json", "repository/timestamp.json")
    }
    director_stamp, repository_stamp = (fetched[p].json()["signed"] for p in fetched)
    director_snapshot = f"{director_stamp['meta']['snapshot.json']['version']}.snapshot.json"
    repository_snapshot = f"{repository_stamp['meta']['snapshot.json']['version']}.snapshot.json"
    snapshot = get(fleet.api, fleet, device, f"repository/{repository_snapshot}").json()["signed"]
    repository_targets = f"{snapshot['meta']['targets.json']['version']}.targets.json"
    snapshot = get(fleet.api, fleet, device, f"director/{director_snapshot}").json()["signed"]
    director_targets = f"{snapshot['meta']['targets.json']['version']}.targets.json"
    targets = get(fleet.api, fleet, device, f"director/{director_targets}").json()["signed"]["targets"]
    [(path, target)] = targets.items()
    folder, name = path.rsplit("/", 1)
    manifest = f"{folder}/{target['hashes']['sha256']}.{name}"
    for path in (
        f"repository/{repository_targets}",
        f"repository/targets/{manifest}",
        "director/1.root.json",
        "director/99.root.json",
        "repository/1.root.json",
        "repository/99.root.json",
    ):
        assert get(fleet.api, fleet, device, path).status_code in (200, 404)
    return Update(device, director_snapshot, director_targets, repository_snapshot, repository_targets, manifest)


@contextmanager
def routes_broken(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """While inside, the TUF routes fail if they are reached."""

    def reached(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the route answered, not the lane")

    with monkeypatch.context() as patch:
        patch.setattr(tuf_routes, "director", SimpleNamespace(read=reached))
        patch.setattr(tuf_routes, "metadata", SimpleNamespace(read=reached, artifact=reached))
        yield


Path = Callable[[Update], str]

ANSWERED_BY_THE_LANE: dict[str, Path] = {
    "director snapshot": lambda u: f"director/{u.director_snapshot}",
    "director targets": lambda u: f"director/{u.director_targets}",
    "director root": lambda _u: "director/1.root.json",
    "the next director root (none yet)": lambda _u: "director/2.root.json",
    "a later director root (none)": lambda _u: "director/99.root.json",
    "repository timestamp": lambda _u: "repository/timestamp.json",
    "repository snapshot": lambda u: f"repository/{u.repository_snapshot}",
    "repository targets": lambda u: f"repository/{u.repository_targets}",
    "repository root": lambda _u: "repository/1.root.json",
    "the next repository root (none yet)": lambda _u: "repository/3.root.json",
    "the release's manifest": lambda u: f"repository/targets/{u.manifest}",
}


def forgotten(hub: Any) -> None:
    """This process forgets everything it held of devices and metadata."""
    hub.caches.changed(None)
    for held in (hub.director_files, hub.repository_files, hub.repository_heads, hub.artifact_bodies):
        held.clear()


@pytest.mark.parametrize("case", ANSWERED_BY_THE_LANE)
@pytest.mark.parametrize("held", [True, False], ids=["held", "read"])
def test_the_lane_answers_an_updates_requests_as_the_routes_do(
    fleet: Fleet, routes_only: TestClient, update: Update, monkeypatch: pytest.MonkeyPatch, case: str, held: bool
) -> None:
    path = ANSWERED_BY_THE_LANE[case](update)
    expected = answer_of(get(routes_only, fleet, update.device, path))
    assert expected[0] in (200, 404)
    if not held:  # read as the route reads it
        forgotten(fleet.hub)
    with routes_broken(monkeypatch):
        assert answer_of(get(fleet.api, fleet, update.device, path)) == expected


def test_a_range_of_the_manifest_is_answered_as_the_route_answers_it(
    fleet: Fleet, routes_only: TestClient, update: Update
) -> None:
    path = f"repository/targets/{update.manifest}"
    expected = answer_of(get(routes_only, fleet, update.device, path, Range="bytes=5-"))
    assert expected[0] == 206
    assert answer_of(get(fleet.api, fleet, update.device, path, Range="bytes=5-")) == expected


def stored_manifest(fleet: Fleet, update: Update) -> pathlib.Path:
    digest = update.manifest.rsplit("/", 1)[-1].split(".", 1)[0]
    return ArtifactStore(fleet.hub.settings.artifacts_path()).path(digest)


def test_a_small_artifact_once_read_is_answered_from_memory_unless_a_range_is_asked(
    fleet: Fleet, routes_only: TestClient, update: Update
) -> None:
    path = f"repository/targets/{update.manifest}"
    expected = answer_of(get(routes_only, fleet, update.device, path))
    stored = stored_manifest(fleet, update)
    good, stat = stored.read_bytes(), stored.stat()
    # Artifacts are never rewritten: other bytes under the same stat show where the answer comes from.
    stored.write_bytes(bytes([good[0] ^ 1]) + good[1:])
    os.utime(stored, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    try:
        assert answer_of(get(fleet.api, fleet, update.device, path)) == expected  # kept: the file is not read
        ranged = get(fleet.api, fleet, update.device, path, Range="bytes=0-")
        assert (ranged.status_code, ranged.content[:1]) == (206, bytes([good[0] ^ 1]))  # a range: read
    finally:
        stored.write_bytes(good)


def test_an_artifact_whose_bytes_are_not_its_digest_is_answered_as_stored_but_not_kept(
    fleet: Fleet, routes_only: TestClient, update: Update
) -> None:
    path = f"repository/targets/{update.manifest}"
    stored = stored_manifest(fleet, update)
    good = stored.read_bytes()
    stored.write_bytes(bytes([good[0] ^ 1]) + good[1:])  # same length, other bytes
    try:
        forgotten(fleet.hub)
        expected = answer_of(get(routes_only, fleet, update.device, path))
        assert answer_of(get(fleet.api, fleet, update.device, path)) == expected  # the agent's to refuse
        assert fleet.hub.artifact_bodies.get(str(stored)) is None
    finally:
        stored.write_bytes(good)
    assert answer_of(get(fleet.api, fleet, update.device, path))[0] == 200
    assert fleet.hub.artifact_bodies.get(str(stored)) is not None


def test_a_large_artifact_is_streamed_and_not_kept(fleet: Fleet, tmp_path: pathlib.Path) -> None:
    big = os.urandom(tuflane.KEPT_ARTIFACT_BYTES + 1)
    file = tmp_path / hashlib.sha256(big).hexdigest()
    file.write_bytes(big)
    response = tuflane._file_answer(fleet.hub, file, file.stat(), whole=True)
    assert isinstance(response, FileResponse)
    assert fleet.hub.artifact_bodies.get(str(file)) is None
    small = big[: tuflane.KEPT_ARTIFACT_BYTES]
    file = tmp_path / hashlib.sha256(small).hexdigest()
    file.write_bytes(small)
    response = tuflane._file_answer(fleet.hub, file, file.stat(), whole=True)
    assert not isinstance(response, FileResponse)
    assert response.body == small
    assert fleet.hub.artifact_bodies.get(str(file)) is not None


def unassigned_manifest(fleet: Fleet, publisher: Publisher) -> str:
    """The manifest of a release published (and assigned to another device) but not assigned to the device."""
    publisher.publish("sensor", "1.1.0")
    assert assign(fleet, fleet.enroll().device_id, "sensor@1.1.0").status_code == 200
    with fleet.hub.store.transaction(readonly=True) as tx:
        release = tx.get_release("sensor", "1.1.0")
    assert release is not None
    folder, name = release.manifest_path.rsplit("/", 1)
    return f"{folder}/{release.manifest_sha256}.{name}"


ODD: dict[str, Callable[[TestClient, Fleet, Update], Any]] = {
    "a query": lambda c, f, u: c.get(
        f"{TUF}/director/{u.director_targets}?x=1", headers=auth(u.device.token(now=f.clock()))
    ),
    "no token": lambda c, _f, u: c.get(f"{TUF}/director/{u.director_targets}"),
    "an operator": lambda c, f, u: c.get(f"{TUF}/repository/{u.repository_targets}", headers=auth(f.admin)),
    "two tokens": lambda c, f, u: c.get(
        f"{TUF}/repository/timestamp.json",
        headers=[("Authorization", "Bearer x"), ("Authorization", f"Bearer {u.device.token(now=f.clock())}")],
    ),
    "a garbage token": lambda c, _f, _u: c.get(f"{TUF}/repository/timestamp.json", headers=auth("not.a.jwt")),
    "a versioned timestamp": lambda c, f, u: get(c, f, u.device, "director/2.timestamp.json"),
    "the unversioned director targets": lambda c, f, u: get(c, f, u.device, "director/targets.json"),
    "the unversioned repository root": lambda c, f, u: get(c, f, u.device, "repository/root.json"),
    "a version zero": lambda c, f, u: get(c, f, u.device, "director/0.root.json"),
    "a director file never signed": lambda c, f, u: get(c, f, u.device, "director/99.targets.json"),
    "a reserved role": lambda c, f, u: get(c, f, u.device, "repository/1.director-root.json"),
    "an unknown name": lambda c, f, u: get(c, f, u.device, "repository/1.ROOT.json"),
    "a name too long": lambda c, f, u: get(c, f, u.device, "repository/" + "a" * 65 + ".json"),
    "a nested name": lambda c, f, u: get(c, f, u.device, "director/x/1.root.json"),
    "a trailing slash": lambda c, f, u: get(c, f, u.device, f"director/{u.director_targets}/"),
    "an artifact that is no release's": lambda c, f, u: get(c, f, u.device, f"repository/targets/x/{'0' * 64}.y"),
    "an artifact not named by digest": lambda c, f, u: get(c, f, u.device, "repository/targets/sensor/compose.yaml"),
    "an artifact path too long": lambda c, f, u: get(c, f, u.device, f"repository/targets/{'a/' * 300}{u.manifest}"),
    "the director's base": lambda c, f, u: get(c, f, u.device, "director/"),
    "a versioned director timestamp held": lambda c, f, u: get(c, f, u.device, "director/1.timestamp.json"),
    "a nested name with a bad token": lambda c, _f, _u: c.get(f"{TUF}/director/a/b", headers=auth("not.a.jwt")),
    "an empty name with a bad token": lambda c, _f, _u: c.get(f"{TUF}/repository/", headers=auth("not.a.jwt")),
    "HEAD": lambda c, f, u: c.head(f"{TUF}/director/{u.director_targets}", headers=auth(u.device.token(now=f.clock()))),
}


@pytest.mark.parametrize("case", ODD)
def test_odd_requests_are_answered_as_the_routes_answer_them(
    fleet: Fleet, routes_only: TestClient, update: Update, case: str
) -> None:
    send = ODD[case]
    expected = answer_of(send(routes_only, fleet, update))
    before = fleet.counts()
    assert answer_of(send(fleet.api, fleet, update)) == expected
    assert expected[0] < 500
    assert fleet.counts() == before


def test_an_artifact_of_a_release_not_assigned_to_the_device_is_refused_by_the_route(
    fleet: Fleet, routes_only: TestClient, publisher: Publisher, update: Update
) -> None:
    path = f"repository/targets/{unassigned_manifest(fleet, publisher)}"
    refused = get(fleet.api, fleet, update.device, path)
    assert (refused.status_code, refused.json()["code"]) == (403, "artifact_not_assigned")
    assert answer_of(refused) == answer_of(get(routes_only, fleet, update.device, path))


def test_an_artifact_missing_on_disk_is_the_routes_to_answer(
    fleet: Fleet, routes_only: TestClient, update: Update
) -> None:
    digest = update.manifest.rsplit("/", 1)[1].split(".", 1)[0]
    (fleet.hub.settings.artifacts_path() / "sha256" / digest).unlink()
    path = f"repository/targets/{update.manifest}"
    missing = get(fleet.api, fleet, update.device, path)
    assert (missing.status_code, missing.json()["code"]) == (404, "artifact_not_found")
    assert answer_of(missing) == answer_of(get(routes_only, fleet, update.device, path))


def test_an_unassigned_release_is_no_longer_served_from_memory(fleet: Fleet, update: Update) -> None:
    with fleet.hub.store.transaction() as tx:
        tx.delete_assignment(update.device.device_id, "sensor")
    refused = get(fleet.api, fleet, update.device, f"repository/targets/{update.manifest}")
    assert (refused.status_code, refused.json()["code"]) == (403, "artifact_not_assigned")


def test_a_revoked_device_is_refused_at_once(fleet: Fleet, update: Update) -> None:
    assert fleet.call("POST", f"/devices/{update.device.device_id}/revoke").status_code == 200
    for path in (
        f"director/{update.director_targets}",
        "repository/timestamp.json",
        f"repository/targets/{update.manifest}",
    ):
        refused = get(fleet.api, fleet, update.device, path)
        assert (refused.status_code, refused.json()["code"]) == (403, "device_revoked")


def settled(hub: Any) -> None:
    """Every change announced so far has reached this process (PostgreSQL delivers in commit order)."""
    seen: list[Any] = []
    hub.store.notifier.watch(lambda keys: seen.append(None if keys is None else set(keys)))
    barrier = f"barrier-{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn(hub), autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, barrier))
    within(10, lambda: any(keys is not None and barrier in keys for keys in seen))


def test_the_lanes_answers_need_no_database(fleet: Fleet, update: Update) -> None:
    if fleet.hub.store.dialect == "postgresql":
        assert fleet.hub.caches.usable
        # The fixture's assignment may reach this process's caches after its poll kept the answer
        # (a NOTIFY is asynchronous): wait for it, then ask again what it made this process forget.
        settled(fleet.hub)
        assert fleet.device_call(update.device, "GET", "/device/target").status_code == 200
        for case in ANSWERED_BY_THE_LANE.values():
            assert get(fleet.api, fleet, update.device, case(update)).status_code in (200, 404)
    statements = statements_of(fleet.hub)
    for case in ANSWERED_BY_THE_LANE.values():
        assert get(fleet.api, fleet, update.device, case(update)).status_code in (200, 404)
    assert statements == []


def test_a_stale_timestamp_is_re_signed_by_the_route(fleet: Fleet, update: Update) -> None:
    first = get(fleet.api, fleet, update.device, "repository/timestamp.json").json()["signed"]
    fleet.clock.advance(fleet.hub.settings.timestamp_lifetime * 0.6)  # past half its life: due for re-signing
    again = get(fleet.api, fleet, update.device, "repository/timestamp.json").json()["signed"]
    assert again["version"] == first["version"] + 1


@postgres_only
def test_a_root_stored_by_another_process_is_served_at_once(fleet: Fleet, other: Fleet, update: Update) -> None:
    assert get(fleet.api, fleet, update.device, "director/2.root.json").status_code == 404  # from memory
    with other.hub.store.transaction(readonly=True) as tx:
        newest = tx.latest_metadata(director.ROOT_ROLE)
    assert newest is not None
    assert newest[0] == 1
    with other.hub.store.transaction() as tx:
        tx.insert_metadata(director.ROOT_ROLE, 2, newest[1], now=other.clock())  # its body does not matter here
    within(PROPAGATION_SECONDS, lambda: fleet.hub.repository_heads.get(director.ROOT_ROLE) is None)
    assert get(fleet.api, fleet, update.device, "director/2.root.json").text == newest[1]


@postgres_only
def test_a_timestamp_signed_by_another_process_is_served_at_once(fleet: Fleet, other: Fleet, update: Update) -> None:
    before = get(fleet.api, fleet, update.device, "repository/timestamp.json").json()["signed"]["version"]
    with other.hub.store.transaction() as tx:
        tx.lock_repository()
        targets = tx.latest_metadata("targets")
        assert targets is not None
        metadata.publish(other.hub, tx, targets[0])  # a new snapshot and timestamp
    within(PROPAGATION_SECONDS, lambda: fleet.hub.repository_heads.get(metadata.TIMESTAMP_HEAD) is None)
    after = get(fleet.api, fleet, update.device, "repository/timestamp.json").json()["signed"]["version"]
    assert after == before + 1
