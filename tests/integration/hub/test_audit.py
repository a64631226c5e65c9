"""The audit chain on a real database: tampering with rows directly is found and named."""

from __future__ import annotations

import itertools
import json

import pytest
from sqlalchemy import text

pytestmark = pytest.mark.integration


def populate(fleet, n_devices: int = 3) -> int:
    token = fleet.enrollment_token(uses=n_devices)
    for _ in range(n_devices):
        fleet.enroll(token)
    fleet.operator_token("viewer", name="vera")
    report = fleet.call("GET", "/audit/verify").json()
    assert report["ok"], report
    return int(report["entries"])


def verify(fleet) -> dict:
    response = fleet.call("GET", "/audit/verify")
    assert response.status_code == 200
    return response.json()


def sql(fleet, statement: str, **params) -> None:
    with fleet.hub.store.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_every_operator_action_is_chained_with_actor_action_target_time_outcome(fleet):
    entries = populate(fleet)
    rows = fleet.call("GET", "/audit", params={"limit": 1000}).json()
    assert len(rows) == entries
    assert [r["seq"] for r in rows] == list(range(entries, 0, -1))
    for newer, older in itertools.pairwise(rows):
        assert newer["prev_hash"] == older["hash"]
    assert rows[-1]["prev_hash"] == "0" * 64
    assert {"actor", "action", "target", "at", "outcome"} <= set(rows[0])
    actions = {r["action"] for r in rows}
    assert {"user.create", "apitoken.create", "token.create", "device.enroll"} <= actions


def test_altered_entry_is_named(fleet):
    populate(fleet)
    sql(fleet, "UPDATE audit_log SET actor = 'user:nobody' WHERE seq = 4")
    report = verify(fleet)
    assert not report["ok"]
    assert report["first_bad_seq"] == 4
    assert "altered" in report["problem"]


def test_altered_detail_is_named(fleet):
    populate(fleet)
    sql(fleet, "UPDATE audit_log SET detail = :d WHERE seq = 3", d=json.dumps({"fleet": "other"}))
    assert verify(fleet)["first_bad_seq"] == 3


def test_removed_entry_is_named(fleet):
    populate(fleet)
    sql(fleet, "DELETE FROM audit_log WHERE seq = 5")
    report = verify(fleet)
    assert not report["ok"]
    assert report["first_bad_seq"] == 5
    assert "removed" in report["problem"]


def test_removed_last_entry_is_named(fleet):
    entries = populate(fleet)
    sql(fleet, "DELETE FROM audit_log WHERE seq = :s", s=entries)
    report = verify(fleet)
    assert report["first_bad_seq"] == entries
    assert "removed" in report["problem"]


def test_inserted_entry_is_named(fleet):
    populate(fleet)
    # Make room at seq 4 (shift the rest up), then insert a forged row there.
    with fleet.hub.store.engine.begin() as conn:
        rows = conn.execute(text("SELECT seq FROM audit_log WHERE seq >= 4 ORDER BY seq DESC")).all()
        for (seq,) in rows:
            conn.execute(text("UPDATE audit_log SET seq = :n WHERE seq = :s"), {"n": seq + 1, "s": seq})
        prev = conn.execute(text("SELECT hash, at FROM audit_log WHERE seq = 3")).one()
        conn.execute(
            text(
                "INSERT INTO audit_log (seq, at, actor, action, target, outcome, detail, prev_hash, hash) "
                "VALUES (4, :at, 'user:admin', 'user.create', 'user:eve', 'ok', :d, :p, :h)"
            ),
            {"at": prev.at, "d": "{}", "p": prev.hash, "h": "ab" * 32},
        )
    report = verify(fleet)
    assert not report["ok"]
    assert report["first_bad_seq"] == 4
    assert "inserted" in report["problem"]


def test_resealed_chain_without_the_key_is_still_caught(fleet):
    """Recomputing plain SHA-256 links does not help someone who lacks the audit key."""
    import hashlib

    populate(fleet)
    sql(fleet, "UPDATE audit_log SET hash = :h WHERE seq = 2", h=hashlib.sha256(b"forged").hexdigest())
    sql(fleet, "UPDATE audit_log SET prev_hash = :h WHERE seq = 3", h=hashlib.sha256(b"forged").hexdigest())
    assert verify(fleet)["first_bad_seq"] == 2


def test_refusals_are_audited_but_reads_are_not(fleet):
    before = verify(fleet)["entries"]
    fleet.call("GET", "/devices")
    fleet.call("GET", "/audit")
    assert verify(fleet)["entries"] == before


def test_concurrent_enrollments_respect_uses_and_keep_the_chain_intact(fleet):
    """Many devices racing for a token with few uses: exactly `uses` win, and the chain stays linear."""
    from concurrent.futures import ThreadPoolExecutor

    from edgefleet import crypto

    token = fleet.enrollment_token(uses=5)
    bodies = [{"token": token, "csr": crypto.make_csr(crypto.generate_key()), "arch": "amd64"} for _ in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda body: fleet.api.post("/api/v1/enroll", json=body).status_code, bodies))
    assert statuses.count(201) == 5
    assert statuses.count(403) == 7
    report = verify(fleet)
    assert report["ok"], report
    assert fleet.counts()["devices"] == 5


def test_truncation_with_the_head_row_is_caught_by_a_checkpoint(fleet):
    populate(fleet)
    report = verify(fleet)
    checkpoint = f"{report['head_seq']}:{report['head_hash']}"
    assert fleet.call("GET", "/audit/verify", params={"checkpoint": checkpoint}).json()["ok"]
    last = report["head_seq"]
    with fleet.hub.store.engine.begin() as conn:
        previous = conn.execute(text("SELECT hash FROM audit_log WHERE seq = :s"), {"s": last - 2}).scalar_one()
        conn.execute(text("DELETE FROM audit_log WHERE seq > :s"), {"s": last - 2})
        conn.execute(text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": last - 2, "h": previous})
    assert verify(fleet)["ok"]  # the chain alone cannot tell
    caught = fleet.call("GET", "/audit/verify", params={"checkpoint": checkpoint}).json()
    assert not caught["ok"]
    assert caught["first_bad_seq"] == last - 1
    assert "removed" in caught["problem"]


def test_a_checkpoint_that_does_not_match_is_named(fleet):
    populate(fleet)
    report = verify(fleet)
    wrong = f"{report['head_seq'] - 1}:{'0' * 64}"
    caught = fleet.call("GET", "/audit/verify", params={"checkpoint": wrong}).json()
    assert caught["first_bad_seq"] == report["head_seq"] - 1
    assert "rewritten" in caught["problem"]
    bad = fleet.call("GET", "/audit/verify", params={"checkpoint": "nope"})
    assert bad.status_code == 422
