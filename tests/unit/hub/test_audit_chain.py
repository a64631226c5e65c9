"""The audit chain's pure verification: any single alteration, removal or insertion is named exactly."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.hub import audit
from edgefleet.hub.records import AuditEntry

KEY = b"k" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def chain(n: int) -> list[AuditEntry]:
    entries, prev = [], audit.GENESIS
    for seq in range(1, n + 1):
        fields = audit.entry_fields(
            at=T0 + timedelta(seconds=seq),
            actor=f"user:u{seq % 3}",
            action="device.tag",
            target=f"device:{seq}",
            outcome="ok",
            detail={"n": seq},
        )
        digest = audit.seal(KEY, seq, prev, fields)
        entries.append(AuditEntry(seq=seq, prev_hash=prev, hash=digest, **fields))
        prev = digest
    return entries


def check(entries: list[AuditEntry], head: tuple[int, str]) -> audit.ChainReport:
    return audit.check_head(audit.verify(entries, key=KEY), head)


def head_of(entries: list[AuditEntry]) -> tuple[int, str]:
    return (entries[-1].seq, entries[-1].hash) if entries else (0, audit.GENESIS)


def test_intact_chain_verifies():
    entries = chain(10)
    report = check(entries, head_of(entries))
    assert report.ok
    assert report.entries == 10


def test_empty_chain_verifies():
    assert check([], (0, audit.GENESIS)).ok


@given(n=st.integers(2, 30), data=st.data())
def test_any_altered_field_is_named(n, data):
    entries = chain(n)
    victim = data.draw(st.integers(0, n - 1))
    field = data.draw(st.sampled_from(["actor", "action", "target", "outcome", "detail", "at"]))
    new = {"detail": {"n": -1}, "at": T0 - timedelta(days=1)}.get(field, "tampered")
    head = head_of(entries)
    entries[victim] = dataclasses.replace(entries[victim], **{field: new})
    report = check(entries, head)
    assert not report.ok
    assert report.first_bad_seq == victim + 1
    assert "altered" in report.problem


@given(n=st.integers(2, 30), data=st.data())
def test_any_removed_entry_is_named(n, data):
    entries = chain(n)
    head = head_of(entries)
    victim = data.draw(st.integers(0, n - 1))
    del entries[victim]
    report = check(entries, head)
    assert not report.ok
    assert report.first_bad_seq == victim + 1
    assert "removed" in report.problem


@given(n=st.integers(1, 30), data=st.data())
def test_any_inserted_entry_is_named(n, data):
    entries = chain(n)
    head = head_of(entries)
    at = data.draw(st.integers(0, n - 1))
    forged = dataclasses.replace(entries[at], actor="user:eve", hash="ab" * 32)
    shifted = [dataclasses.replace(e, seq=e.seq + 1) for e in entries[at:]]
    tampered = [*entries[:at], forged, *shifted]
    report = check(tampered, head)
    assert not report.ok
    assert report.first_bad_seq == at + 1
    assert "inserted" in report.problem


def test_appended_forgery_past_the_head_is_named():
    entries = chain(5)
    head = head_of(entries)
    forged = dataclasses.replace(entries[-1], seq=6, prev_hash=entries[-1].hash, hash="cd" * 32)
    report = check([*entries, forged], head)
    assert report.first_bad_seq == 6


def test_oversized_detail_is_bounded():
    fields = audit.entry_fields(
        at=T0, actor="a" * 500, action="x", target="t", outcome="ok", detail={"blob": "x" * 10_000}
    )
    assert fields["detail"] == {"truncated": True}
    assert len(fields["actor"]) == 128
