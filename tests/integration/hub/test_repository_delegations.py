"""Hostile and malformed delegations: top-level targets that delegate past a bound, and bad delegated pushes.

Every refusal is a 4xx with a stable code, and nothing is stored but the audit entry of the
refused action.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner, Signer

from edgefleet.hub.services import releases as release_service
from edgefleet.publisher.keys import load_signers
from tests.conftest import Fleet
from tests.publishing import Publisher, resign

pytestmark = pytest.mark.integration


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("other", "1.0.0")
    return publisher


@pytest.fixture
def team(fleet: Fleet, publisher: Publisher, tmp_path: Path) -> Publisher:
    team = Publisher.team(fleet, tmp_path, "sensor-team")
    assert publisher.delegate(team, "sensor").status_code == 201
    return team


def refused(fleet: Fleet, response: Any, status: int, code: str, before: dict[str, int]) -> str:
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    after = fleet.counts()
    assert after == {**before, "audit_log": after["audit_log"]}, "a refused push stores nothing"
    return str(response.json()["message"])


def sign_raw(targets: dict[str, Any], signer: Signer, change: Any) -> dict[str, Any]:
    """`targets` with `change` applied to its signed part, signed without python-tuf parsing it (which would refuse)."""
    signed = copy.deepcopy(targets["signed"])
    change(signed)
    signature = signer.sign(encode_canonical(signed).encode())
    return {"signed": signed, "signatures": [signature.to_dict()]}


KEY = CryptoSigner.generate_ed25519().public_key


def role(name: str = "team", **fields: Any) -> dict[str, Any]:
    return {"name": name, "keyids": [KEY.keyid], "threshold": 1, "terminating": True, "paths": ["sensor/*/*"], **fields}


def delegations(*roles: dict[str, Any], keys: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"keys": keys if keys is not None else {KEY.keyid: KEY.to_dict()}, "roles": list(roles)}


@pytest.mark.parametrize(
    ("given", "code"),
    [
        (delegations(*(role(f"team-{i}") for i in range(17))), "invalid_delegation"),
        (delegations(role("targets")), "invalid_metadata"),  # python-tuf refuses it while parsing
        (delegations(role("snapshot")), "invalid_metadata"),
        (delegations(role("director-root")), "invalid_delegation"),
        (delegations(role("Team_A")), "invalid_delegation"),
        (delegations(role("t" * 33)), "invalid_delegation"),
        (delegations(role(threshold=2)), "invalid_delegation"),
        (delegations(role(keyids=["f" * 64])), "invalid_delegation"),
        (delegations(role(keyids=[KEY.keyid, KEY.keyid], threshold=2)), "invalid_metadata"),
        (delegations(role(keyids=[])), "invalid_delegation"),
        (delegations(role(paths=[])), "invalid_delegation"),
        (delegations(role(paths=[f"sensor/{i}/*" for i in range(33)])), "invalid_delegation"),
        (delegations(role(paths=["s" * 300])), "invalid_delegation"),
        (delegations(role(paths=None, path_hash_prefixes=["ab"] * 40)), "invalid_delegation"),
        (
            {"keys": {KEY.keyid: KEY.to_dict()}, "succinct_roles": {**role(), "bit_length": 8, "name_prefix": "bin"}},
            "invalid_delegation",
        ),
        (
            {
                "keys": {KEY.keyid: KEY.to_dict()},
                "succinct_roles": {"keyids": [KEY.keyid], "threshold": 1, "bit_length": 8, "name_prefix": "bin"},
            },
            "invalid_delegation",
        ),
        (delegations(role("team"), role("team")), "invalid_metadata"),
        (delegations(role(path_hash_prefixes=["ab"])), "invalid_metadata"),
        (delegations(role(), keys={KEY.keyid: {"keytype": "ed25519"}}), "invalid_metadata"),
        (delegations(role("team-x", threshold=0)), "invalid_metadata"),
    ],
    ids=[
        "17 roles",
        "top-level name",
        "snapshot",
        "director's",
        "bad characters",
        "too long",
        "threshold above keys",
        "unknown key",
        "duplicate keys",
        "no keys",
        "no paths",
        "33 paths",
        "long pattern",
        "40 hash prefixes",
        "succinct with paths",
        "succinct",
        "role twice",
        "paths and prefixes",
        "bad key",
        "threshold 0",
    ],
)
def test_delegations_the_hub_does_not_serve_are_refused(fleet: Fleet, publisher: Publisher, given: Any, code: str):
    build = publisher.build("other", "2.0.0")
    targets = publisher.sign(build)
    publisher.upload(build)
    hostile = sign_raw(targets, load_signers(publisher.keys, "targets")[0], lambda s: s.update(delegations=given))
    before = fleet.counts()
    response = publisher.push_targets(hostile)
    refused(fleet, response, 400, code, before)


def test_a_repository_holds_a_bounded_number_of_roles_ever(fleet: Fleet, publisher: Publisher, tmp_path, monkeypatch):
    monkeypatch.setattr(release_service, "MAX_ROLES_EVER", 1)
    first = Publisher.team(fleet, tmp_path, "team-a")
    assert publisher.delegate(first, "sensor").status_code == 201
    first.publish("sensor", "1.0.0")
    assert publisher.revoke("team-a").status_code == 201
    second = Publisher.team(fleet, tmp_path, "team-b")
    before = fleet.counts()
    message = refused(fleet, publisher.delegate(second, "sensor"), 409, "too_many_roles", before)
    assert "at most 1 delegated roles" in message


def _team_targets(team: Publisher, version: str = "1.0.0", *, upload: bool = True) -> dict[str, Any]:
    build = team.build("sensor", version)
    targets = team.sign(build)
    if upload:
        team.upload(build)
    return targets


def _signed(team: Publisher, targets: dict[str, Any], change: Any) -> dict[str, Any]:
    key = load_signers(team.keys, team.role)[0]
    return json.loads(resign(json.dumps(targets).encode(), key, change))


@pytest.mark.parametrize(
    ("role_name", "status", "code"),
    [
        ("Team", 422, "invalid_request"),
        ("t" * 33, 422, "invalid_request"),
        ("-team", 422, "invalid_request"),
        ("targets", 400, "invalid_role"),
        ("root", 400, "invalid_role"),
        ("director-root", 400, "invalid_role"),
        ("nobody", 403, "not_delegated"),
    ],
)
def test_pushes_for_a_role_that_is_not_delegated_are_refused(
    fleet: Fleet, team: Publisher, role_name: str, status: int, code: str
):
    targets = _team_targets(team)
    before = fleet.counts()
    response = fleet.call("POST", f"/repository/targets/{role_name}", json=targets)
    refused(fleet, response, status, code, before)


def test_malformed_and_hostile_delegated_pushes_are_refused(
    fleet: Fleet, publisher: Publisher, team: Publisher, monkeypatch
):
    path = "/repository/targets/sensor-team"
    targets = _team_targets(team)
    before = fleet.counts()
    raw = fleet.api.post(
        f"/api/v1{path}",
        content=b'{"signed": ',
        headers={"Authorization": f"Bearer {fleet.admin}", "Content-Type": "application/json"},
    )
    refused(fleet, raw, 400, "malformed_json", before)
    refused(fleet, fleet.call("POST", path, json={"signed": {"_type": "root"}}), 400, "invalid_metadata", before)
    refused(fleet, fleet.call("POST", path, json=[]), 422, "invalid_request", before)
    floats = copy.deepcopy(targets)
    floats["signed"]["targets"]["sensor/1.0.0/compose.yaml"]["custom"]["x"] = 1.5
    refused(fleet, fleet.call("POST", path, json=floats), 400, "invalid_metadata", before)
    huge = {**targets, "padding": "x" * (fleet.hub.settings.max_targets_bytes + 1)}
    refused(fleet, fleet.call("POST", path, json=huge), 413, "body_too_large", before)

    nested = _signed(team, targets, lambda s: s.update(delegations=delegations(role("deeper"))))
    refused(fleet, fleet.call("POST", path, json=nested), 400, "delegations_unsupported", before)
    stranger = json.loads(resign(json.dumps(targets).encode(), CryptoSigner.generate_ed25519()))
    refused(fleet, fleet.call("POST", path, json=stranger), 403, "signature_threshold", before)
    holders = json.loads(resign(json.dumps(targets).encode(), load_signers(publisher.keys, "targets")[0]))
    refused(fleet, fleet.call("POST", path, json=holders), 403, "signature_threshold", before)
    expired = _signed(team, targets, lambda s: s.update(expires="2000-01-01T00:00:00Z"))
    refused(fleet, fleet.call("POST", path, json=expired), 409, "expired", before)
    zero = sign_raw(targets, load_signers(team.keys, team.role)[0], lambda s: s.update(version=0))
    refused(fleet, fleet.call("POST", path, json=zero), 400, "invalid_metadata", before)
    viewer = fleet.operator_token("viewer")
    before = fleet.counts()
    refused(fleet, fleet.call("POST", path, viewer, json=targets), 403, "insufficient_role", before)
    monkeypatch.setattr(release_service, "MAX_TARGETS", 0)
    refused(fleet, fleet.call("POST", path, json=targets), 400, "too_many_targets", before)
    monkeypatch.undo()

    assert fleet.call("POST", path, json=targets).status_code == 201
    before = fleet.counts()
    refused(fleet, fleet.call("POST", path, json=targets), 409, "wrong_version", before)
    not_uploaded = _team_targets(team, "1.1.0", upload=False)
    message = refused(fleet, fleet.call("POST", path, json=not_uploaded), 409, "targets_rejected", before)
    assert "was not uploaded" in message


def test_a_delegated_role_is_served_like_the_top_level_targets(fleet: Fleet, team: Publisher):
    pushed = team.publish("sensor", "1.0.0")
    version = pushed["signed"]["version"]
    for name in (f"{version}.sensor-team.json", "sensor-team.json"):
        response = fleet.call("GET", f"/tuf/repository/{name}")
        assert response.status_code == 200
        assert json.loads(response.content) == pushed
    assert fleet.api.get(f"/api/v1/tuf/repository/{version}.sensor-team.json").status_code == 401
    assert fleet.call("GET", f"/tuf/repository/{version + 1}.sensor-team.json").status_code == 404
    assert fleet.call("GET", "/repository/targets/nobody").status_code == 404
    assert fleet.call("GET", "/repository/targets/director-root").status_code == 404
    viewer = fleet.operator_token("viewer")
    assert fleet.call("GET", "/repository/targets/sensor-team", viewer).json() == pushed


def test_release_counters_rise_across_roles(fleet: Fleet, publisher: Publisher, tmp_path):
    publisher.publish("sensor", "1.0.0")
    publisher.publish("sensor", "1.1.0")
    team = Publisher.team(fleet, tmp_path, "sensor-team")
    assert publisher.delegate(team, "sensor").status_code == 201
    first = _team_targets(team, "2.0.0")
    before = fleet.counts()
    message = refused(fleet, team.push_targets(first), 409, "targets_rejected", before)
    assert "release_counter 1 must be above 2 for sensor" in message
