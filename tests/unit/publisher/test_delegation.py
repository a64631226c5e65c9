"""Delegations on the publisher's side, offline: team keys, the delegated role in the targets, a team's signing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Targets

from edgefleet.publisher.delegation import DelegationError, delegate, delegations, revoke
from edgefleet.publisher.errors import KeyStoreError
from edgefleet.publisher.keys import (
    RoleKeys,
    init_delegated_keys,
    init_keys,
    load_delegated,
    load_index,
    load_signers,
    team_keys,
)
from edgefleet.publisher.release import BuildError, SigningError, sign, signed_targets
from edgefleet.publisher.state import load_targets
from edgefleet.releases import MAX_DELEGATED_ROLES, parse_custom
from tests.unit.publisher.test_release_sign import make_build

NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture
def holders(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    init_keys(keys)
    return keys


def team(tmp_path: Path, role: str = "sensor-team", **kwargs: int) -> Path:
    keys = tmp_path / f"team-{role}"
    init_delegated_keys(keys, role, **kwargs)
    return keys


def handed_over(keys: Path) -> RoleKeys:
    """The public keys a team hands over (its keys.json)."""
    found = team_keys(keys / "keys.json")
    assert found is not None
    return found[1]


def test_a_teams_key_directory_holds_one_delegated_role_and_hands_over_public_keys(tmp_path: Path) -> None:
    keys = team(tmp_path, threshold=2, count=3)
    files = sorted((keys / "sensor-team").glob("*.key"))
    assert len(files) == 3
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    index = json.loads((keys / "keys.json").read_text())
    assert list(index) == ["sensor-team"]
    assert index["sensor-team"]["delegated"] is True
    assert "PRIVATE" not in (keys / "keys.json").read_text()
    found = team_keys(keys / "keys.json")
    assert found is not None
    assert found[0] == "sensor-team"
    assert found[1].threshold == 2
    assert {k.keyid for k in found[1].keys} == {f.stem for f in files}
    assert len(load_signers(keys, "sensor-team")) == 3
    with pytest.raises(KeyStoreError, match="holds the keys of the delegated role sensor-team"):
        load_index(keys)
    with pytest.raises(KeyStoreError, match="not of targets"):
        load_signers(keys, "targets")


def test_a_publishers_key_directory_is_not_a_teams(holders: Path) -> None:
    assert load_delegated(holders) is None
    with pytest.raises(KeyStoreError, match=r"not a team's keys\.json"):
        team_keys(holders / "keys.json")


@pytest.mark.parametrize("role", ["targets", "root", "director-root", "Team", "a" * 33, "-x", ""])
def test_bad_role_names_are_refused_before_anything_is_written(tmp_path: Path, role: str) -> None:
    with pytest.raises(KeyStoreError, match="bad role name"):
        init_delegated_keys(tmp_path / "team", role)
    assert not (tmp_path / "team").exists()


def test_delegate_names_the_teams_keys_threshold_and_exactly_its_apps_paths(holders: Path, tmp_path: Path) -> None:
    keys_of_team = handed_over(team(tmp_path, threshold=2, count=2))
    metadata = delegate(holders, "sensor-team", keys_of_team, ["sensor", "sensor-extra"], now=NOW)
    assert metadata.signed.version == 1
    role = metadata.signed.delegations.roles["sensor-team"]  # type: ignore[union-attr,index]
    assert role.paths == ["sensor/*/*", "sensor/*/images/*", "sensor-extra/*/*", "sensor-extra/*/images/*"]
    assert (role.threshold, role.terminating, set(role.keyids)) == (2, True, {k.keyid for k in keys_of_team.keys})
    for path, delegated in [
        ("sensor/1.0.0/compose.yaml", True),
        ("sensor/1.0.0/images/sha256-ab.tar", True),
        ("sensor-extra/2.0.0/compose.yaml", True),
        ("sensorx/1.0.0/compose.yaml", False),
        ("other/1.0.0/compose.yaml", False),
        ("sensor/1.0.0", False),
        ("sensor/1.0.0/other/x.tar", False),
    ]:
        assert role.is_delegated_path(path) is delegated, path
    # Signed by the targets threshold and recorded like a release.
    recorded = load_targets(holders)
    assert recorded is not None
    assert recorded.to_dict() == metadata.to_dict()
    load_index(holders)["targets"].keys[0].verify_signature(
        next(iter(metadata.signatures.values())), metadata.signed_bytes
    )
    assert [(d.role, d.threshold) for d in delegations(holders)] == [("sensor-team", 2)]


def test_delegating_again_replaces_keys_and_apps_and_drops_unused_keys(holders: Path, tmp_path: Path) -> None:
    first = handed_over(team(tmp_path))
    second = handed_over(team(tmp_path / "new"))
    delegate(holders, "sensor-team", first, ["sensor"], now=NOW)
    metadata = delegate(holders, "sensor-team", second, ["gateway"], now=NOW)
    delegated = metadata.signed.delegations
    assert delegated is not None
    assert delegated.roles is not None
    assert delegated.roles["sensor-team"].paths == ["gateway/*/*", "gateway/*/images/*"]
    assert set(delegated.keys) == {k.keyid for k in second.keys}
    assert metadata.signed.version == 2


def test_an_app_belongs_to_one_team(holders: Path, tmp_path: Path) -> None:
    sensor = handed_over(team(tmp_path))
    other = handed_over(team(tmp_path, "other-team"))
    delegate(holders, "sensor-team", sensor, ["sensor"], now=NOW)
    with pytest.raises(DelegationError, match="sensor is delegated to sensor-team already"):
        delegate(holders, "other-team", other, ["gateway", "sensor"], now=NOW)
    assert load_targets(holders).signed.version == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("apps", [[], ["Sensor"], ["sensor/x"], ["a" * 64], [f"app{i}" for i in range(17)]])
def test_bad_app_lists_are_refused(holders: Path, tmp_path: Path, apps: list[str]) -> None:
    keys_of_team = handed_over(team(tmp_path))
    with pytest.raises(DelegationError):
        delegate(holders, "sensor-team", keys_of_team, apps, now=NOW)
    assert load_targets(holders) is None


def test_the_number_of_delegated_roles_is_bounded(holders: Path, tmp_path: Path) -> None:
    keys_of_team = handed_over(team(tmp_path))
    for i in range(MAX_DELEGATED_ROLES):
        delegate(holders, f"team-{i}", keys_of_team, [f"app-{i}"], now=NOW)
    with pytest.raises(DelegationError, match=f"at most {MAX_DELEGATED_ROLES} roles"):
        delegate(holders, "one-more", keys_of_team, ["late"], now=NOW)


def test_revoke_drops_the_role_and_its_keys(holders: Path, tmp_path: Path) -> None:
    sensor = handed_over(team(tmp_path))
    other = handed_over(team(tmp_path, "other-team"))
    delegate(holders, "sensor-team", sensor, ["sensor"], now=NOW)
    delegate(holders, "other-team", other, ["other"], now=NOW)
    metadata = revoke(holders, "sensor-team", now=NOW)
    delegated = metadata.signed.delegations
    assert delegated is not None
    assert delegated.roles is not None
    assert list(delegated.roles) == ["other-team"]
    assert set(delegated.keys) == {k.keyid for k in other.keys}
    assert revoke(holders, "other-team", now=NOW).signed.delegations is None
    with pytest.raises(DelegationError, match="do not delegate to other-team"):
        revoke(holders, "other-team", now=NOW)
    assert delegations(holders) == []


def test_a_teams_key_directory_cannot_delegate(tmp_path: Path) -> None:
    keys = team(tmp_path)
    keys_of_team = handed_over(keys)
    with pytest.raises(DelegationError, match="delegations are made with the targets keys"):
        delegate(keys, "sensor-team", keys_of_team, ["sensor"], now=NOW)


def test_a_team_signs_its_roles_targets_into_the_build(holders: Path, tmp_path: Path) -> None:
    keys = team(tmp_path)
    built = make_build(tmp_path, "sensor", "1.0.0")
    metadata = sign(built, keys, now=NOW, counter_above=4)
    role, file = signed_targets(built)
    assert (role, file) == ("sensor-team", built / "delegated" / "sensor-team.json")
    assert Metadata[Targets].from_file(str(file)).to_dict() == metadata.to_dict()
    assert not (built / "targets.json").exists()
    assert load_targets(keys, role="sensor-team") is not None
    assert load_targets(keys) is None
    info = parse_custom(metadata.signed.targets["sensor/1.0.0/compose.yaml"].custom)
    assert getattr(info, "release_counter", None) == 5  # above the hub's highest, given
    second = sign(make_build(tmp_path, "sensor", "1.1.0"), keys, now=NOW)
    assert second.signed.version == 2
    assert getattr(parse_custom(second.signed.targets["sensor/1.1.0/compose.yaml"].custom), "release_counter", 0) == 6


def test_the_holders_do_not_sign_a_delegated_app(holders: Path, tmp_path: Path) -> None:
    keys_of_team = handed_over(team(tmp_path))
    delegate(holders, "sensor-team", keys_of_team, ["sensor"], now=NOW)
    with pytest.raises(SigningError, match="sensor is delegated to the role sensor-team"):
        sign(make_build(tmp_path, "sensor", "1.0.0"), holders, now=NOW)
    other = sign(make_build(tmp_path, "other", "1.0.0"), holders, now=NOW)
    assert other.signed.delegations is not None  # a release keeps the delegation in the targets


def test_an_unsigned_build_has_no_signed_targets(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not a signed build"):
        signed_targets(make_build(tmp_path, "sensor", "1.0.0"))
