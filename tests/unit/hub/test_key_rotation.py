"""`hub keys rotate` on a data dir: new keys current, old ones kept retired; cut short anywhere, no half state."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edgefleet.hub import rotation
from edgefleet.hub.datadir import MAX_RETIRED, load_keys
from edgefleet.hub.errors import HubConfigError
from edgefleet.hub.rotation import rotate_keys


@pytest.fixture
def data_dir(hub_keys_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "hub"
    shutil.copytree(hub_keys_dir, copy)
    return copy


def tree(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every file below `directory` with its mode and bytes: 'nothing changed' compares these."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mode & 0o777, p.read_bytes())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def keyid(data_dir: Path, role: str) -> str:
    return load_keys(data_dir).online_signers[role].public_key.keyid


def test_the_new_key_is_current_and_the_old_one_is_kept_retired(data_dir: Path) -> None:
    old = {role: keyid(data_dir, role) for role in ("director", "snapshot", "timestamp")}
    old_key_file = (data_dir / "keys" / "snapshot.key").read_bytes()

    done = rotate_keys(data_dir, ["timestamp", "snapshot", "snapshot"])

    assert [(k.role, k.retired_keyid) for k in done.keys] == [
        ("snapshot", old["snapshot"]),
        ("timestamp", old["timestamp"]),
    ]
    assert not done.resumed
    keys = load_keys(data_dir)
    assert keys.online_signers["director"].public_key.keyid == old["director"]
    for rotated in done.keys:
        assert keys.online_signers[rotated.role].public_key.keyid == rotated.keyid != rotated.retired_keyid
        assert keys.online_public[rotated.role]["keyid"] == rotated.keyid
        assert (
            keys.held(rotated.role, rotated.retired_keyid) is keys.retired_signers[rotated.role][rotated.retired_keyid]
        )
        assert keys.held(rotated.role, rotated.keyid) is keys.online_signers[rotated.role]
    retired = data_dir / "keys" / "retired" / "snapshot" / f"{old['snapshot']}.key"
    assert retired.read_bytes() == old_key_file
    assert retired.stat().st_mode & 0o777 == 0o600
    assert (data_dir / "keys" / "snapshot.key").stat().st_mode & 0o777 == 0o600
    assert (data_dir / "keys" / "retired").stat().st_mode & 0o777 == 0o700
    assert keys.held("director", "0" * 64) is None
    assert sorted(p.name for p in (data_dir / "keys").iterdir()) == [
        "director.key",
        "director.pub",
        "retired",
        "snapshot.key",
        "snapshot.pub",
        "timestamp.key",
        "timestamp.pub",
    ]


def test_a_second_rotation_keeps_both_retired_keys_and_overwrites_none(data_dir: Path) -> None:
    first = rotate_keys(data_dir, ["director"]).keys[0]
    kept = tree(data_dir / "keys" / "retired")
    second = rotate_keys(data_dir, ["director"]).keys[0]
    assert second.retired_keyid == first.keyid
    after = tree(data_dir / "keys" / "retired")
    assert {k: v for k, v in after.items() if k in kept} == kept
    assert set(load_keys(data_dir).retired_signers["director"]) == {first.retired_keyid, first.keyid}


@pytest.mark.parametrize("roles", [["root"], [], ["snapshot", "targets"]])
def test_an_unknown_role_is_refused_before_anything_is_written(data_dir: Path, roles: list[str]) -> None:
    before = tree(data_dir)
    with pytest.raises(HubConfigError) as caught:
        rotate_keys(data_dir, roles)
    assert caught.value.code == "unknown_role"
    assert "the roles are director, snapshot, timestamp" in caught.value.message
    assert tree(data_dir) == before


def test_a_directory_that_is_no_data_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HubConfigError, match="is not a hub data dir"):
        rotate_keys(tmp_path, ["director"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("after", [0, 1, 3])
def test_a_rotation_cut_short_before_its_commit_point_changes_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException, after: int
) -> None:
    before = tree(data_dir)
    writes: list[Path] = []
    real = rotation.crypto.write_private_file

    def failing(path: Path, data: bytes) -> None:
        if len(writes) == after:
            raise failure
        writes.append(path)
        real(path, data)

    monkeypatch.setattr(rotation.crypto, "write_private_file", failing)
    expected = KeyboardInterrupt if isinstance(failure, KeyboardInterrupt) else HubConfigError
    with pytest.raises(expected) as caught:
        rotate_keys(data_dir, ["snapshot", "timestamp"])
    if isinstance(caught.value, HubConfigError):
        assert caught.value.code == "data_dir_unwritable"
        assert "No space left on device; nothing changed" in caught.value.message
    assert tree(data_dir) == before
    assert not (data_dir / "keys" / ".rotating").exists()
    assert not (data_dir / "keys" / "pending").exists()
    load_keys(data_dir)


def test_a_rotation_cut_short_after_its_commit_point_is_finished_by_running_it_again(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = keyid(data_dir, "snapshot")
    real = os.replace

    def crash_after_the_first_switch(source: str | Path, target: str | Path) -> None:
        if Path(source).parent.name == "pending" and Path(target).name == "snapshot.key":  # snapshot.pub is in place
            raise OSError(5, "Input/output error")
        real(source, target)

    monkeypatch.setattr(rotation.os, "replace", crash_after_the_first_switch)
    with pytest.raises(HubConfigError, match="run the same command again") as caught:
        rotate_keys(data_dir, ["snapshot", "timestamp"])
    assert caught.value.code == "data_dir_unwritable"
    monkeypatch.undo()

    # The hub refuses to start on a half-switched key pair...
    with pytest.raises(HubConfigError) as refused:
        load_keys(data_dir)
    assert refused.value.code == "rotation_unfinished"
    # ...another rotation is refused, naming the command that finishes this one...
    before = tree(data_dir)
    with pytest.raises(HubConfigError) as other:
        rotate_keys(data_dir, ["director"])
    assert other.value.code == "rotation_unfinished"
    assert "--role snapshot --role timestamp" in other.value.message
    assert tree(data_dir) == before
    # ...and the same command finishes it.
    done = rotate_keys(data_dir, ["timestamp", "snapshot"])
    assert done.resumed
    keys = load_keys(data_dir)
    assert {k.role: k.retired_keyid for k in done.keys}["snapshot"] == old
    assert keys.online_signers["snapshot"].public_key.keyid == next(k.keyid for k in done.keys if k.role == "snapshot")
    assert old in keys.retired_signers["snapshot"]
    assert not (data_dir / "keys" / "pending").exists()


def test_leftovers_of_a_crash_before_the_commit_point_are_discarded(data_dir: Path) -> None:
    old = keyid(data_dir, "director")
    staging = data_dir / "keys" / ".rotating"
    staging.mkdir()
    (staging / "director.key").write_bytes(b"half a key")
    retired = data_dir / "keys" / "retired" / "director"
    retired.mkdir(parents=True)
    shutil.copy2(data_dir / "keys" / "director.pub", retired / f"{old}.pub")  # the copy got as far as the .pub
    assert load_keys(data_dir).retired_signers["director"] == {}  # an orphan .pub is no key

    done = rotate_keys(data_dir, ["director"])

    assert not staging.exists()
    assert set(load_keys(data_dir).retired_signers["director"]) == {old}
    assert done.keys[0].retired_keyid == old


@pytest.mark.parametrize("damage", ["garbage", "misnamed", "no-pub", "mode"])
def test_a_corrupt_retired_key_stops_the_hub_and_the_rotation(data_dir: Path, damage: str) -> None:
    first = rotate_keys(data_dir, ["snapshot"]).keys[0]
    path = data_dir / "keys" / "retired" / "snapshot" / f"{first.retired_keyid}.key"
    if damage == "garbage":
        path.write_bytes(b"not a key")
    elif damage == "misnamed":
        path.rename(path.with_name(f"{'a' * 64}.key"))
        path.with_suffix(".pub").rename(path.with_name(f"{'a' * 64}.pub"))
    elif damage == "no-pub":
        path.with_suffix(".pub").unlink()
    else:
        path.chmod(0o644)
    before = tree(data_dir)
    with pytest.raises(HubConfigError) as loading:
        load_keys(data_dir)
    assert loading.value.code == ("key_permissions" if damage == "mode" else "key_invalid")
    assert "retired/snapshot" in loading.value.message
    with pytest.raises(HubConfigError) as rotating:
        rotate_keys(data_dir, ["snapshot"])
    assert rotating.value.code == loading.value.code
    assert tree(data_dir) == before


def test_retired_keys_are_bounded(data_dir: Path) -> None:
    for _ in range(MAX_RETIRED):
        rotate_keys(data_dir, ["timestamp"])
    before = tree(data_dir)
    with pytest.raises(HubConfigError) as caught:
        rotate_keys(data_dir, ["timestamp"])
    assert caught.value.code == "too_many_retired_keys"
    assert "remove those no root names any more" in caught.value.message
    assert tree(data_dir) == before
    rotate_keys(data_dir, ["snapshot"])  # other roles are not held up
    extra = data_dir / "keys" / "retired" / "timestamp"
    current = data_dir / "keys" / "timestamp"
    keyid_now = keyid(data_dir, "timestamp")
    shutil.copy2(current.with_suffix(".key"), extra / f"{keyid_now}.key")
    shutil.copy2(current.with_suffix(".pub"), extra / f"{keyid_now}.pub")
    with pytest.raises(HubConfigError) as loading:
        load_keys(data_dir)
    assert loading.value.code == "too_many_retired_keys"
