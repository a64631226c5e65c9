"""`hub keys rotate` and `repo rotate-online-keys` from the command line: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgefleet.cli.common import EXIT_UNAVAILABLE, EXIT_USAGE
from edgefleet.cli.main import main
from edgefleet.hub.datadir import load_keys
from edgefleet.publisher.keys import init_keys
from tests.unit.cli.test_conventions import UNREACHABLE, assert_one_line_error


@pytest.fixture
def data_dir(hub_keys_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "hub"
    shutil.copytree(hub_keys_dir, copy)
    return copy


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_rotate_prints_the_new_keys_and_what_to_do_next(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = load_keys(data_dir).online_signers["snapshot"].public_key.keyid
    code, out, err = run(["hub", "keys", "rotate", "--data-dir", str(data_dir), "--role", "snapshot"], capsys)
    assert code == 0, err
    new = load_keys(data_dir).online_signers["snapshot"].public_key.keyid
    assert out.split() == ["snapshot:", "new", "key", new, "(replaced", f"{old},", "kept", "in", "keys/retired/)"]
    assert "restart every hub process" in err
    assert "edgefleet repo rotate-online-keys --keys KEYS" in err
    assert "director root" not in err

    code, out, err = run(["hub", "keys", "rotate", "--data-dir", str(data_dir), "--all", "--json"], capsys)
    assert code == 0, err
    rotated = json.loads(out)
    assert [k["role"] for k in rotated["keys"]] == ["director", "snapshot", "timestamp"]
    assert rotated["keys"][1]["retired_keyid"] == new
    assert rotated["resumed"] is False
    assert "director root" in err


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["--role", "targets"], "unknown role 'targets'", "use director, snapshot or timestamp"),
        ([], "give --role (once per role) or --all", "--role snapshot --role timestamp"),
        (["--all", "--role", "director"], "give --role (once per role) or --all", "--role snapshot"),
    ],
)
def test_a_bad_role_is_a_usage_error_and_changes_nothing(
    data_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str, hint: str
) -> None:
    before = files(data_dir)
    code, out, err = run(["hub", "keys", "rotate", "--data-dir", str(data_dir), *args], capsys)
    assert (code, out) == (EXIT_USAGE, "")
    assert_one_line_error(err)
    assert message in err
    assert hint in err
    assert files(data_dir) == before


def test_no_data_dir_or_an_unfinished_rotation_is_unusable_configuration(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["hub", "keys", "rotate", "--data-dir", str(tmp_path / "none"), "--all"], capsys)
    assert code == EXIT_UNAVAILABLE
    assert_one_line_error(err)
    assert "is not a hub data dir" in err

    pending = data_dir / "keys" / "pending"
    pending.mkdir()
    (pending / "rotation.json").write_text(json.dumps({"timestamp": "0" * 64}))
    code, _, err = run(["hub", "keys", "rotate", "--data-dir", str(data_dir), "--role", "director"], capsys)
    assert code == EXIT_UNAVAILABLE
    assert_one_line_error(err)
    assert "an interrupted rotation of timestamp" in err
    assert "--role timestamp" in err


def test_rotate_online_keys_checks_the_key_directory_before_the_hub(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)  # never used for `repo init`: it records no root
    code, out, err = run(["repo", "rotate-online-keys", "--keys", str(keys), *UNREACHABLE], capsys)
    assert (code, out) == (EXIT_USAGE, "")
    assert_one_line_error(err)
    assert "has not initialised a repository" in err
    assert "hint: run it with the key directory of `repo init`" in err
    assert "cannot reach the hub" not in err
