"""Team delegations end to end in-process: the targets holders delegate an app, the team signs it, devices install it.

The publisher and the team each drive the library code the CLI uses, against the in-process
hub; the device is the agent's own verification library. A team key may sign only its own
app: the hub refuses anything else, and so does a device shown it by a compromised hub.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, TargetFile, Targets

from edgefleet.agent.errors import UpdateRefusedError
from edgefleet.hub import signing
from edgefleet.hub.records import AssignedBy, Assignment, ReleaseRecord
from edgefleet.hub.services import metadata as repo_metadata
from edgefleet.publisher.keys import load_signers
from edgefleet.publisher.state import load_targets
from edgefleet.releases import CUSTOM_KEY, ManifestTarget
from tests.conftest import Fleet
from tests.publishing import Device, Publisher, Tamper, assign, compose, resign


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    return Publisher.create(fleet, tmp_path)


@pytest.fixture
def team(fleet: Fleet, publisher: Publisher, tmp_path: Path) -> Publisher:
    """The sensor team, delegated `sensor` after the holders published another app themselves."""
    publisher.publish("other", "1.0.0")
    team = Publisher.team(fleet, tmp_path, "sensor-team")
    response = publisher.delegate(team, "sensor")
    assert response.status_code == 201, response.text
    return team


def releases(fleet: Fleet) -> dict[str, tuple[str, bool]]:
    """APP@VERSION -> (role that signed it, whether it is a target now)."""
    rows = fleet.call("GET", "/repository/releases").json()
    return {f"{r['app']}@{r['version']}": (r["role"], r["current"]) for r in rows}


def snapshot_meta(fleet: Fleet) -> dict[str, int]:
    stamp = json.loads(fleet.call("GET", "/tuf/repository/timestamp.json").content)
    version = stamp["signed"]["meta"]["snapshot.json"]["version"]
    snapshot = json.loads(fleet.call("GET", f"/tuf/repository/{version}.snapshot.json").content)
    return {name: meta["version"] for name, meta in snapshot["signed"]["meta"].items()}


def test_a_team_signs_its_app_and_a_device_installs_it(fleet: Fleet, publisher: Publisher, team: Publisher, tmp_path):
    pushed = team.publish("sensor", "1.0.0", bundle=True)
    assert releases(fleet) == {"other@1.0.0": ("targets", True), "sensor@1.0.0": ("sensor-team", True)}
    assert snapshot_meta(fleet) == {"targets.json": 2, "sensor-team.json": pushed["signed"]["version"]}
    served = fleet.call("GET", f"/tuf/repository/{pushed['signed']['version']}.sensor-team.json")
    assert json.loads(served.content) == pushed
    assert fleet.call("GET", "/repository/targets/sensor-team").json() == pushed

    device = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    assert assign(fleet, device.id, "other@1.0.0").status_code == 200
    release = device.update("sensor")
    assert (release.app, release.version, release.release_counter) == ("sensor", "1.0.0", 1)
    assert [p.name for p in (release.directory / "images").iterdir()] == [f"sha256-{'a' * 64}.tar"]
    assert device.update("other").version == "1.0.0"  # the holders' own release, beside the team's
    # The device verified the team's role with the keys the top-level targets name for it.
    cached = Metadata[Targets].from_file(str(device.trust.metadata_dir("repository") / "sensor-team.json"))
    assert "sensor/1.0.0/compose.yaml" in cached.signed.targets


def test_a_team_key_cannot_sign_another_app_on_the_hub(fleet: Fleet, publisher: Publisher, team: Publisher):
    build = team.build("other", "2.0.0")
    targets = team.sign(build)
    team.upload(build)
    before = fleet.counts()
    response = team.push_targets(targets)
    assert (response.status_code, response.json()["code"]) == (403, "path_not_delegated"), response.text
    assert "other/2.0.0/compose.yaml" in response.json()["message"]
    after = fleet.counts()
    assert after == {**before, "audit_log": before["audit_log"] + 1}  # the refusal is audited, nothing else
    assert fleet.call("GET", "/repository/targets/sensor-team").status_code == 404


def test_the_holders_cannot_sign_an_app_they_delegated(publisher: Publisher, team: Publisher):
    from edgefleet.publisher.release import SigningError

    with pytest.raises(SigningError, match="sensor is delegated to the role sensor-team"):
        publisher.sign(publisher.build("sensor", "1.0.0"))


def _team_signed(team: Publisher, change: Any) -> Metadata[Targets]:
    """The team's next targets, changed by `change`, signed by the team's own key (a stolen team key)."""
    record = load_targets(team.keys, role=team.role)
    signed = record.signed if record else Targets(expires=datetime.now(UTC) + timedelta(days=7))
    signed.version += 1
    change(signed)
    metadata = Metadata(signed)
    for signer in load_signers(team.keys, team.role):
        metadata.sign(signer, append=True)
    return metadata


def _serve_past_the_hub(fleet: Fleet, role: str, metadata: Metadata[Targets], release: ReleaseRecord, device: str):
    """A compromised hub: stores what its checks would refuse, assigns it, and signs its snapshot and director."""
    hub = fleet.hub
    with hub.store.transaction() as tx:
        tx.lock_repository()
        tx.insert_metadata(role, metadata.signed.version, signing.to_text(metadata), now=hub.clock())
        tx.insert_release(release)
        tx.put_assignment(
            Assignment(
                device_id=device,
                app=release.app,
                version=release.version,
                release_counter=release.release_counter,
                rollback=False,
                assigned_by=AssignedBy.operator("attacker"),
                assigned_at=hub.clock(),
            )
        )
        latest = tx.latest_metadata("targets")
        assert latest is not None
        repo_metadata.publish(hub, tx, latest[0])


def _forged_release(team: Publisher, *, app: str, version: str, path: str, counter: int) -> tuple[Any, TargetFile]:
    """A real manifest of APP@VERSION, uploaded, listed at `path` with the team's signed custom fields."""
    data = compose(app, version).encode()
    digest = hashlib.sha256(data).hexdigest()
    assert team.fleet.call("PUT", f"/repository/artifacts/{digest}", content=data).status_code == 201
    custom = ManifestTarget(app=app, version=version, release_counter=counter, architectures=("arm64",))
    target = TargetFile(len(data), {"sha256": digest}, path, {"custom": {CUSTOM_KEY: custom.model_dump(mode="json")}})
    record = ReleaseRecord(
        app=app,
        version=version,
        release_counter=counter,
        architectures=("arm64",),
        manifest_path=path,
        manifest_length=len(data),
        manifest_sha256=digest,
        artifacts=(digest,),
        signer_keyids=(),
        targets_version=1,
        created_at=datetime.now(UTC),
        role=team.role,
    )
    return record, target


def test_another_apps_release_signed_by_a_team_key_is_not_trusted_by_a_device(
    fleet: Fleet, publisher: Publisher, team: Publisher, tmp_path
):
    device = Device.enroll(fleet, tmp_path)
    record, target = _forged_release(team, app="other", version="2.0.0", path="other/2.0.0/compose.yaml", counter=2)
    forged = _team_signed(team, lambda s: s.targets.update({target.path: target}))
    assert team.push_targets(forged.to_dict()).json()["code"] == "path_not_delegated"

    _serve_past_the_hub(fleet, team.role, forged, record, device.id)
    with pytest.raises(UpdateRefusedError) as refused:
        device.update("other")
    # A client searches the team's role only for the paths delegated to it: other/... is not among them.
    assert refused.value.reason == "not_in_repository", refused.value
    assert device.installed_files() == []


def test_a_team_cannot_pass_off_another_apps_release_under_its_own_paths(
    fleet: Fleet, publisher: Publisher, team: Publisher, tmp_path
):
    device = Device.enroll(fleet, tmp_path)
    record, target = _forged_release(team, app="other", version="9.0.0", path="sensor/9.0.0/compose.yaml", counter=9)
    forged = _team_signed(team, lambda s: s.targets.update({target.path: target}))
    response = team.push_targets(forged.to_dict())
    assert (response.status_code, response.json()["code"]) == (409, "targets_rejected"), response.text
    assert "must be at other/9.0.0/compose.yaml" in response.json()["message"]

    _serve_past_the_hub(fleet, team.role, forged, record, device.id)
    with pytest.raises(UpdateRefusedError) as refused:
        device.update("other")
    assert refused.value.reason == "mix_and_match", refused.value
    assert device.installed_files() == []


def test_revoking_a_delegation(fleet: Fleet, publisher: Publisher, team: Publisher, tmp_path):
    team.publish("sensor", "1.0.0")
    running = Device.enroll(fleet, tmp_path)
    assert assign(fleet, running.id, "sensor@1.0.0").status_code == 200
    assert assign(fleet, running.id, "other@1.0.0").status_code == 200
    assert running.update("sensor").version == "1.0.0"
    team_version = snapshot_meta(fleet)["sensor-team.json"]

    response = publisher.revoke("sensor-team")
    assert response.status_code == 201, response.text
    targets = fleet.call("GET", "/repository/targets").json()
    assert targets["signed"].get("delegations") is None

    # The team's releases are no longer targets: not listed as current, not assignable, not deployable.
    assert releases(fleet) == {"other@1.0.0": ("targets", True), "sensor@1.0.0": ("sensor-team", False)}
    other_device = Device.enroll(fleet, tmp_path)
    refused = assign(fleet, other_device.id, "sensor@1.0.0")
    assert (refused.status_code, refused.json()["code"]) == (409, "release_withdrawn")
    body = {"app": "sensor", "version": "1.0.0", "target": "env=prod"}
    refused = fleet.call("POST", "/deployments", json=body)
    assert (refused.status_code, refused.json()["code"]) == (409, "release_withdrawn")

    # The team's next push is refused: its keys are trusted for nothing now.
    build = team.build("sensor", "1.1.0")
    targets_11 = team.sign(build)
    team.upload(build)
    before = fleet.counts()
    refused = team.push_targets(targets_11)
    assert (refused.status_code, refused.json()["code"]) == (403, "not_delegated")
    assert fleet.counts() == {**before, "audit_log": before["audit_log"] + 1}

    # The snapshot still lists the role (TUF clients refuse a snapshot that drops one), so devices
    # keep updating; a device checking the revoked release again refuses it.
    assert running.update("other").version == "1.0.0"
    assert snapshot_meta(fleet)["sensor-team.json"] == team_version
    with pytest.raises(UpdateRefusedError) as gone:
        running.update("sensor", installed=1)
    assert gone.value.reason == "not_in_repository"


def test_a_team_with_a_threshold_and_a_redelegation_to_new_keys(fleet: Fleet, publisher: Publisher, tmp_path):
    team = Publisher.team(fleet, tmp_path, "sensor-team", threshold=2)
    assert publisher.delegate(team, "sensor").status_code == 201
    build = team.build("sensor", "1.0.0")
    targets = team.sign(build)
    team.upload(build)
    assert len(targets["signatures"]) == 2
    refused = team.push_targets({**targets, "signatures": targets["signatures"][:1]})
    assert (refused.status_code, refused.json()["code"]) == (403, "signature_threshold")
    assert team.push_targets(targets).status_code == 201
    assert releases(fleet)["sensor@1.0.0"] == ("sensor-team", True)

    # The holders trust other keys for the role now: what the old keys signed is no longer a target.
    newcomer = Publisher.team(fleet, tmp_path / "new", "sensor-team")
    assert publisher.delegate(newcomer, "sensor").status_code == 201
    assert releases(fleet)["sensor@1.0.0"] == ("sensor-team", False)


def test_a_director_that_delegates_is_refused(fleet: Fleet, publisher: Publisher, team: Publisher, tmp_path):
    """The director's targets never delegate: a compromised hub cannot hand a device's assignment to another key."""
    team.publish("sensor", "1.0.0")
    device = Device.enroll(fleet, tmp_path)
    assert assign(fleet, device.id, "sensor@1.0.0").status_code == 200
    director_key = fleet.hub.keys.online_signers["director"]
    stranger = CryptoSigner.generate_ed25519()

    def delegating(signed: dict[str, Any]) -> None:
        role = {"name": "elsewhere", "keyids": [stranger.public_key.keyid], "threshold": 1, "terminating": True}
        signed["delegations"] = {
            "keys": {stranger.public_key.keyid: stranger.public_key.to_dict()},
            "roles": [{**role, "paths": ["*/*/*"]}],
        }

    rules = {r"/tuf/director/\d+\.targets\.json$": lambda d: resign(d, director_key, delegating)}
    tamper = Tamper(fleet.device_client().fetcher(device.identity), rules)
    with pytest.raises(UpdateRefusedError) as refused:
        device.update("sensor", fetcher=tamper)
    assert (refused.value.reason, refused.value.message) == ("metadata", "the director's targets must not delegate")
    assert tamper.hits
    assert device.installed_files() == []
