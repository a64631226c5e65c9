"""The update journal: durable phases, allowed transitions, one open update per app, deadlines."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgefleet.agent.bounds import Bounds
from edgefleet.agent.journal import FORWARD, Journal, JournalError, allowed

HOUR = timedelta(hours=1)

T0 = datetime(2026, 11, 22, 12, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_transaction_walks_forward_and_survives_reopening(tmp_path: Path) -> None:
    clock = Clock()
    journal = Journal(tmp_path / "journal.db", clock=clock)
    tx = journal.begin(
        "sensor", from_release="1.0.0", to_release="1.1.0", strategy="download-then-kill", timeout=timedelta(minutes=5)
    )
    for phase in FORWARD[1:-1]:
        tx = journal.advance(tx, phase, timeout=timedelta(minutes=5), detail={phase: True})
    journal.close()

    reopened = Journal(tmp_path / "journal.db", clock=clock)
    (open_tx,) = reopened.unfinished()
    assert (open_tx.phase, open_tx.from_release, open_tx.to_release) == ("probing", "1.0.0", "1.1.0")
    assert open_tx.detail == dict.fromkeys(FORWARD[1:-1], True)
    done = reopened.advance(open_tx, "committed")
    assert done.finished
    assert done.deadline is None
    assert reopened.unfinished() == []
    assert reopened.last("sensor") == done


def test_only_allowed_transitions(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    tx = journal.begin("a", from_release=None, to_release="1", strategy="s", timeout=timedelta(minutes=1))
    with pytest.raises(JournalError, match="cannot go from verified to staged"):
        journal.advance(tx, "staged")
    tx = journal.advance(tx, "downloading")
    tx = journal.advance(tx, "downloading")  # a resumed download
    tx = journal.advance(tx, "rolling-back", error="disk full")
    with pytest.raises(JournalError):
        journal.advance(tx, "committed")
    tx = journal.advance(tx, "rolled-back")
    assert tx.error == "disk full"
    with pytest.raises(JournalError):
        journal.advance(tx, "rolling-back")
    assert allowed("probing", "committed")
    assert not allowed("committed", "rolling-back")


def test_one_unfinished_update_per_app(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    journal.begin("a", from_release=None, to_release="1", strategy="s", timeout=timedelta(minutes=1))
    with pytest.raises(JournalError, match="unfinished"):
        journal.begin("a", from_release=None, to_release="2", strategy="s", timeout=timedelta(minutes=1))
    journal.begin("b", from_release=None, to_release="1", strategy="s", timeout=timedelta(minutes=1))
    assert [t.app for t in journal.unfinished()] == ["a", "b"]


def test_every_unfinished_phase_has_a_deadline(tmp_path: Path) -> None:
    clock = Clock()
    journal = Journal(tmp_path / "j.db", clock=clock)
    tx = journal.begin("a", from_release=None, to_release="1", strategy="s", timeout=timedelta(minutes=2))
    assert not tx.overdue(clock.now + timedelta(minutes=1))
    assert tx.overdue(clock.now + timedelta(minutes=3))


def test_the_journal_is_wal_and_synchronous(tmp_path: Path) -> None:
    Journal(tmp_path / "j.db").close()
    db = sqlite3.connect(tmp_path / "j.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_phase_is_on_disk_when_advance_returns(tmp_path: Path) -> None:
    """A process killed right after `advance` leaves that phase behind for the next start."""
    script = (
        "import os, signal, sys; from datetime import timedelta; from pathlib import Path;"
        "from edgefleet.agent.journal import Journal;"
        "j = Journal(Path(sys.argv[1]));"
        "t = j.begin('a', from_release=None, to_release='1', strategy='s', timeout=timedelta(minutes=1));"
        "j.advance(t, 'downloading'); os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "j.db")], check=False)
    (tx,) = Journal(tmp_path / "j.db").unfinished()
    assert tx.phase == "downloading"


def test_an_unusable_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "j.db").write_bytes(b"not a database" * 100)
    with pytest.raises(JournalError, match="unusable journal"):
        Journal(tmp_path / "j.db")


def test_a_journal_that_cannot_be_written_says_so_as_its_own_error(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    tx = journal.begin("web", from_release="1.0.0", to_release="1.1.0", strategy="hand-over", timeout=timedelta(1))
    blocker = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file, as a failing disk would refuse it
    journal._db.execute("PRAGMA busy_timeout = 50")
    with pytest.raises(JournalError, match="journal unwritable"):
        journal.advance(tx, "downloading", timeout=timedelta(1))
    blocker.execute("ROLLBACK")
    assert journal.advance(tx, "downloading", timeout=timedelta(1)).phase == "downloading"  # nothing left half-done


def test_interruptions_count_only_the_latest_tries_of_one_assignment_in_a_row(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")

    def attempt(mark: str, error: str | None) -> None:
        tx = journal.begin(
            "web", from_release="1.0.0", to_release="1.1.0", strategy="hand-over", timeout=HOUR, detail={"mark": mark}
        )
        tx = journal.advance(tx, "rolling-back", timeout=HOUR, error=error)
        journal.advance(tx, "rolled-back")

    assert journal.interruptions("web", "2-1.1.0") == 0
    attempt("2-1.1.0", "interrupted while probing")
    attempt("2-1.1.0", "web: exited with code 3")  # a verdict breaks the run
    attempt("2-1.1.0", "interrupted while switching")
    attempt("2-1.1.0", "interrupted while probing (web: slow)")
    assert journal.interruptions("web", "2-1.1.0") == 2
    assert journal.interruptions("web", "2-1.1.0-retry1") == 0  # an operator's retry starts afresh
    assert journal.interruptions("db", "2-1.1.0") == 0


def test_a_finished_transaction_waits_to_be_settled_and_says_how_it_ended(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")

    def finish(app: str, outcome: str | None) -> None:
        tx = journal.begin(app, from_release="1.0.0", to_release="1.1.0", strategy="hand-over", timeout=HOUR)
        if outcome == "committed":
            for phase in FORWARD[1:]:
                tx = journal.advance(tx, phase, timeout=HOUR)
            return
        tx = journal.advance(tx, "rolling-back", timeout=HOUR, detail={"outcome": outcome} if outcome else {})
        journal.advance(tx, "rolled-back")

    open_tx = journal.begin("db", from_release=None, to_release="1.0.0", strategy="hand-over", timeout=HOUR)
    with pytest.raises(JournalError, match="cannot be settled"):
        journal.settle(open_tx)
    assert open_tx.outcome is None
    for app, outcome in (("a", "committed"), ("b", "failed"), ("c", "retry"), ("d", "interrupted"), ("e", None)):
        finish(app, outcome)
    unsettled = journal.unsettled()
    # A rollback with no outcome recorded (an older agent's) counts as interrupted.
    assert [(tx.app, tx.outcome) for tx in unsettled] == [
        ("a", "committed"),
        ("b", "failed"),
        ("c", "retry"),
        ("d", "interrupted"),
        ("e", "interrupted"),
    ]
    journal.settle(unsettled[1])
    journal.close()
    reopened = Journal(tmp_path / "journal.db")
    assert [tx.app for tx in reopened.unsettled()] == ["a", "c", "d", "e"]  # durable
    assert reopened.get(unsettled[1].id).settled


def test_an_older_agents_journal_gains_the_settled_mark_with_its_transactions_settled(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as old:  # the schema before settling existed
        old.executescript(
            "CREATE TABLE transactions (id INTEGER PRIMARY KEY AUTOINCREMENT, app TEXT NOT NULL, from_release TEXT,"
            " to_release TEXT NOT NULL, strategy TEXT NOT NULL, phase TEXT NOT NULL, deadline TEXT, error TEXT,"
            " detail TEXT NOT NULL DEFAULT '{}', started_at TEXT NOT NULL, updated_at TEXT NOT NULL);"
            "INSERT INTO transactions (app, to_release, strategy, phase, started_at, updated_at)"
            " VALUES ('web', '1.0.0', 'hand-over', 'committed', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z');"
            "INSERT INTO transactions (app, to_release, strategy, phase, started_at, updated_at)"
            " VALUES ('db', '1.0.0', 'hand-over', 'probing', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z');"
        )
    journal = Journal(path)
    assert journal.unsettled() == []  # what the older agent finished, it had recorded itself
    (killed,) = journal.unfinished()  # what it left unfinished is recovered, and settled, by this one
    killed = journal.advance(killed, "rolling-back", detail={"outcome": "interrupted"})
    journal.advance(killed, "rolled-back")
    assert [t.app for t in journal.unsettled()] == ["db"]
    journal.settle(killed)
    tx = journal.begin("web", from_release="1.0.0", to_release="1.1.0", strategy="hand-over", timeout=HOUR)
    tx = journal.advance(tx, "rolling-back", timeout=HOUR, detail={"outcome": "failed"})
    journal.advance(tx, "rolled-back")
    assert [t.id for t in journal.unsettled()] == [tx.id]


def test_pruning_never_drops_an_unsettled_transaction(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db", bounds=Bounds(journal_keep=2, max_interruptions=1))
    finished = []
    for version in ("1.1.0", "1.2.0", "1.3.0", "1.4.0"):
        tx = journal.begin("web", from_release="1.0.0", to_release=version, strategy="hand-over", timeout=HOUR)
        tx = journal.advance(tx, "rolling-back", timeout=HOUR)
        finished.append(journal.advance(tx, "rolled-back"))
    journal.settle(finished[1])
    tx = journal.begin("web", from_release="1.0.0", to_release="1.5.0", strategy="hand-over", timeout=HOUR)
    journal.settle(journal.advance(journal.advance(tx, "rolling-back", timeout=HOUR), "rolled-back"))
    kept = [row[0] for row in journal._db.execute("SELECT to_release FROM transactions ORDER BY id")]
    assert kept == ["1.1.0", "1.3.0", "1.4.0", "1.5.0"]  # 1.2.0 was settled and old: pruned; the unsettled stay
