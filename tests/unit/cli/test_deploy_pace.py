"""A deployments file's `max_pending` (`deploy create --max-pending`): passed on as the API's pace; bad ones refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.cli.deploy import read_file
from edgefleet.cli.exits import CliError

ENTRY = "deployments:\n  - name: prod\n    release: sensor@2.0.0\n    target: env=prod\n"


def test_a_files_pace_is_the_apis_max_pending(tmp_path: Path) -> None:
    declared = tmp_path / "d.yaml"
    declared.write_text(ENTRY + "    max_pending: 200\n")
    [body] = read_file(declared)
    assert body["max_pending"] == 200
    declared.write_text(ENTRY)
    [body] = read_file(declared)
    assert "max_pending" not in body  # each wave at once


@pytest.mark.parametrize("value", ["0", "-3", "ten", "true", "1.5", "1000001", "[1]"])
def test_a_bad_pace_in_a_file_is_a_usage_error_naming_the_entry(tmp_path: Path, value: str) -> None:
    declared = tmp_path / "d.yaml"
    declared.write_text(ENTRY + f"    max_pending: {value}\n")
    with pytest.raises(CliError) as raised:
        read_file(declared)
    assert raised.value.exit_code == 2
    assert raised.value.message.startswith(f"{declared}: deployment 1 (prod): bad max_pending")
