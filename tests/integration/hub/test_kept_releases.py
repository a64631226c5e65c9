"""Releases each hub process keeps once read: only committed ones, and never one a rolled-back transaction wrote."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from edgefleet.hub.context import Hub
from edgefleet.hub.db.releases import KeptReleases
from edgefleet.hub.records import ReleaseRecord


def release(version: str) -> ReleaseRecord:
    return ReleaseRecord(
        app="sensor",
        version=version,
        release_counter=1,
        architectures=("arm64",),
        manifest_path=f"sensor/{version}/manifest.json",
        manifest_length=10,
        manifest_sha256="a" * 64,
        artifacts=("a" * 64,),
        signer_keyids=(),
        targets_version=1,
        created_at=datetime.now(UTC).replace(microsecond=0),
        role="targets",
    )


class AbandonedError(Exception):
    pass


def insert_and_abandon(hub: Hub, record: ReleaseRecord) -> None:
    with hub.store.transaction() as tx:
        tx.insert_release(record)
        assert tx.get_release(record.app, record.version) is not None
        raise AbandonedError


def test_a_release_read_once_is_answered_from_memory(hub: Hub) -> None:
    with hub.store.transaction() as tx:
        tx.insert_release(release("1.0.0"))
    with hub.store.transaction() as tx:
        assert tx.get_release("sensor", "1.0.0") is not None
    assert hub.store.releases.get("sensor", "1.0.0") is None  # a writing transaction's read is not kept
    with hub.store.transaction(readonly=True) as tx:
        read = tx.get_release("sensor", "1.0.0")
    assert hub.store.releases.get("sensor", "1.0.0") == read
    # Kept: even a row changed behind the hub's back (never done: releases are immutable) is not read again.
    with hub.store.transaction() as tx:
        tx._s.execute(text("UPDATE releases SET release_counter = 7 WHERE version = '1.0.0'"))
    with hub.store.transaction(readonly=True) as tx:
        assert tx.get_release("sensor", "1.0.0") == read


def test_a_release_a_rolled_back_transaction_wrote_is_not_kept(hub: Hub) -> None:
    with pytest.raises(AbandonedError):
        insert_and_abandon(hub, release("2.0.0"))
    assert hub.store.releases.get("sensor", "2.0.0") is None
    with hub.store.transaction(readonly=True) as tx:
        assert tx.get_release("sensor", "2.0.0") is None


def test_kept_releases_are_bounded() -> None:
    kept = KeptReleases(capacity=2)
    for version in ("1", "2", "3"):
        kept.keep(release(version))
    assert [kept.get("sensor", v) is not None for v in ("1", "2", "3")] == [False, True, True]
