"""`release publish` after a failed push: the signing is undone only when the hub did not store the release."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from edgefleet.cli.common import EXIT_REFUSED, EXIT_UNAVAILABLE, CliError
from edgefleet.cli.release import _settle_failed_push
from edgefleet.publisher.release import Build
from edgefleet.publisher.state import TARGETS, restore_targets_record, targets_record

BEFORE, AFTER = b'{"signed": "version 4"}', b'{"signed": "version 5, with sensor@1.1.0"}'


class Hub:
    """Answers `release list` with `listed`, or cannot be reached when `listed` is None."""

    def __init__(self, listed: list[str] | None) -> None:
        self.listed = listed

    def call(self, method: str, path: str, **_: Any) -> Any:
        assert (method, path) == ("GET", "/repository/releases")
        if self.listed is None:
            raise CliError("cannot reach the hub", exit_code=EXIT_UNAVAILABLE)
        return [{"app": "sensor", "version": v} for v in self.listed]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    (tmp_path / TARGETS).parent.mkdir(parents=True)
    (tmp_path / TARGETS).write_bytes(AFTER)  # what `sign` just wrote
    return tmp_path


RELEASE = cast(Build, type("B", (), {"app": "sensor", "version": "1.1.0", "ref": "sensor@1.1.0"})())
REFUSED = CliError("hub refused: insufficient_role", exit_code=EXIT_REFUSED)
LOST = CliError("cannot reach the hub: read timeout", exit_code=EXIT_UNAVAILABLE)


@pytest.mark.parametrize(
    ("failure", "listed", "kept"),
    [
        (REFUSED, None, BEFORE),  # a refusal stores nothing: undone without asking
        (LOST, ["1.0.0"], BEFORE),  # lost, and the hub does not list it: undone
        (KeyboardInterrupt(), ["1.1.0", "1.0.0"], AFTER),  # the hub stored it: the record stays
        (LOST, None, AFTER),  # cannot tell: kept (the next publish carries it)
    ],
)
def test_the_signing_is_undone_only_when_the_hub_did_not_store_the_release(keys, failure, listed, kept, capsys):
    _settle_failed_push(cast(Any, Hub(listed)), RELEASE, keys, BEFORE, failure)
    assert (keys / TARGETS).read_bytes() == kept
    told = capsys.readouterr().err
    assert ("could not tell whether the hub stored sensor@1.1.0" in told) == (listed is None and failure is LOST)


def test_a_first_release_never_published_leaves_no_record(tmp_path):
    assert targets_record(tmp_path) is None
    (tmp_path / TARGETS).parent.mkdir(parents=True)
    (tmp_path / TARGETS).write_bytes(AFTER)
    restore_targets_record(tmp_path, None)
    assert not (tmp_path / TARGETS).exists()
