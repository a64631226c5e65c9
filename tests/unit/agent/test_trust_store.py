"""The device's trusted TUF metadata changes only through `TrustStore.keep` of a verified staging copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgefleet.agent.truststore import TrustStore


def trusted_set(trust: TrustStore) -> Path:
    directory = trust.metadata_dir("director")
    (directory / "root_history").mkdir(parents=True)
    (directory / "root_history" / "1.root.json").write_text("root v1")
    (directory / "root.json").symlink_to("root_history/1.root.json")
    for role in ("timestamp", "snapshot", "targets"):
        (directory / f"{role}.json").write_text(f"{role} v1")
    return directory


def test_a_staging_copy_left_alone_changes_nothing(tmp_path: Path) -> None:
    trust = TrustStore(tmp_path)
    directory = trusted_set(trust)

    def refresh_and_refuse() -> None:
        with trust.staged("director") as staging:
            assert (staging / "root.json").read_text() == "root v1"
            (staging / "targets.json").write_text("targets of another device")
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        refresh_and_refuse()
    assert (directory / "targets.json").read_text() == "targets v1"
    assert not list(tmp_path.glob(".staging-*"))


def test_kept_metadata_replaces_the_trusted_set_in_ngclients_layout(tmp_path: Path) -> None:
    trust = TrustStore(tmp_path)
    directory = trusted_set(trust)
    (tmp_path / ".staging-director-dead").mkdir()  # a crash's leftover
    before = (directory / "snapshot.json").stat().st_ino
    with trust.staged("director") as staging:
        assert not (tmp_path / ".staging-director-dead").exists()
        (staging / "root_history" / "2.root.json").write_text("root v2")
        (staging / "root.json").unlink()
        (staging / "root.json").symlink_to("root_history/2.root.json")
        (staging / "targets.json").write_text("targets v2")
        (staging / "timestamp.json").write_text("timestamp v2")
        trust.keep("director", staging)
    assert os.readlink(directory / "root.json") == "root_history/2.root.json"
    assert (directory / "root.json").read_text() == "root v2"
    assert (directory / "root_history" / "1.root.json").read_text() == "root v1"
    assert [(directory / f"{r}.json").read_text() for r in ("targets", "timestamp")] == ["targets v2", "timestamp v2"]
    assert (directory / "snapshot.json").stat().st_ino == before  # unchanged files are not written again
