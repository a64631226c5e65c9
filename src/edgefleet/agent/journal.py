"""The agent's update journal: one SQLite file (WAL, synchronous=FULL), each phase written before its effect.

An update of one app is a transaction that moves through

    verified -> downloading -> downloaded -> staged -> switching -> probing -> committed

and from any unfinished phase to ``rolling-back -> rolled-back``. A phase is committed
to disk (fsync) before the agent acts on it, so after a crash or power loss the agent
knows exactly where each update stood and completes or undoes it before anything else.
Every unfinished phase has a deadline: nothing can stay "updating" forever. At most one
unfinished transaction per app.

Beside the transactions, the journal keeps each app's release floor: the release counter of
the last release installed (`raise_floor`). It outlives the app's installed record: an app
that is unassigned and assigned again later still cannot be given an older release without
the director's signed rollback mark (`agent.verify`).

A finished transaction is then *settled*: its caller records what it means (the installed
release, a failure mark, the event for the hub) from what the journal holds, and marks it
settled (`unsettled`, `settle`). Killed between the final phase and that bookkeeping, the
agent settles it at its next start instead of running the update again. How it ended is in
its detail: ``outcome`` is ``committed``, ``failed`` (a failed health verdict: failed,
whatever happens after), ``retry`` (engine or disk trouble) or ``interrupted`` (recovered at
start, with ``interrupted_in``: the phase it was in).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.durable import connect, immediate
from edgefleet.agent.errors import JournalError as JournalError

Phase = Literal[
    "verified",
    "downloading",
    "downloaded",
    "staged",
    "switching",
    "probing",
    "committed",
    "rolling-back",
    "rolled-back",
]
FORWARD: tuple[Phase, ...] = ("verified", "downloading", "downloaded", "staged", "switching", "probing", "committed")
FINAL: frozenset[Phase] = frozenset({"committed", "rolled-back"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    from_release TEXT,
    to_release TEXT NOT NULL,
    strategy TEXT NOT NULL,
    phase TEXT NOT NULL,
    deadline TEXT,
    error TEXT,
    detail TEXT NOT NULL DEFAULT '{}',
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    settled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS transactions_open ON transactions (app, phase);
CREATE TABLE IF NOT EXISTS release_floors (app TEXT PRIMARY KEY, release_counter INTEGER NOT NULL);
"""


_SETTLED_COLUMN = "ALTER TABLE transactions ADD COLUMN settled INTEGER NOT NULL DEFAULT 1"
"""A journal of an agent from before settling: its finished transactions count as settled (that agent did it)."""
Ending = Literal["committed", "failed", "retry", "interrupted"]
"""How a finished transaction ended (`Transaction.outcome`)."""

INTERRUPTED = "interrupted while "
"""How the reason of a transaction recovered at start begins."""


@dataclass(frozen=True, slots=True)
class Transaction:
    """One app's update, as the journal last recorded it."""

    id: int
    app: str
    from_release: str | None
    """The release running before (APP's version), None for a first install."""
    to_release: str
    strategy: str
    phase: Phase
    deadline: datetime | None
    error: str | None
    detail: dict[str, Any]
    started_at: datetime
    updated_at: datetime
    settled: bool = False

    @property
    def finished(self) -> bool:
        return self.phase in FINAL

    @property
    def outcome(self) -> Ending | None:
        """How it ended (None while unfinished); a rollback with no outcome recorded counts as interrupted."""
        if self.phase == "committed":
            return "committed"
        if self.phase != "rolled-back":
            return None
        recorded = self.detail.get("outcome")
        return recorded if recorded in ("failed", "retry", "interrupted") else "interrupted"

    def overdue(self, now: datetime) -> bool:
        return not self.finished and self.deadline is not None and now > self.deadline


def allowed(current: Phase, new: Phase) -> bool:
    """Forward one phase at a time (downloading may repeat, for resumed downloads); or roll back."""
    if current in FINAL:
        return False
    if new == "rolling-back":
        return True
    if current == "rolling-back":
        return new == "rolled-back"
    if new == current == "downloading":
        return True
    return current in FORWARD and new in FORWARD and FORWARD.index(new) == FORWARD.index(current) + 1


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Journal:
    """The journal file of one agent; every write is a durable SQLite transaction."""

    def __init__(
        self, path: Path, *, clock: Callable[[], datetime] = _utc_now, bounds: Bounds = DEFAULT_BOUNDS
    ) -> None:
        """Open (or create) the journal at `path`.

        `bounds`: a transaction's error (`journal_error_chars`) and detail (`journal_detail_bytes`:
        containers old and new, what settles it, a failing service's logs), and how many finished
        ones are kept (`journal_keep`).
        """
        self._clock = clock
        self._bounds = bounds
        self._db = connect(path, _SCHEMA, JournalError, "journal")
        self._db.row_factory = sqlite3.Row
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(transactions)")}
        if "settled" not in columns:
            with self._write():
                self._db.execute(_SETTLED_COLUMN)
                # What the older agent left unfinished is recovered by this one, and settled then.
                self._db.execute("UPDATE transactions SET settled = 0 WHERE phase NOT IN ('committed', 'rolled-back')")

    def close(self) -> None:
        self._db.close()

    def begin(
        self,
        app: str,
        *,
        from_release: str | None,
        to_release: str,
        strategy: str,
        timeout: timedelta,
        detail: dict[str, Any] | None = None,
    ) -> Transaction:
        """Record a verified update of `app` (the first phase); refused while another is unfinished.

        `detail` is what the caller needs to settle it later; its ``mark`` names the assignment
        being carried out, so interruptions of the same assignment can be counted (`interruptions`).

        Raises:
            JournalError: `app` has an unfinished transaction.
        """
        now = self._clock()
        with self._write():
            if self._open(app) is not None:
                raise JournalError(f"{app} already has an unfinished update")
            cursor = self._db.execute(
                "INSERT INTO transactions (app, from_release, to_release, strategy, phase, deadline, started_at,"
                " updated_at, detail, settled) VALUES (?, ?, ?, ?, 'verified', ?, ?, ?, ?, 0)",
                (
                    app,
                    from_release,
                    to_release,
                    strategy,
                    (now + timeout).isoformat(),
                    now.isoformat(),
                    now.isoformat(),
                    self._encoded(detail or {}),
                ),
            )
            row_id = cursor.lastrowid
        return self.get(int(row_id or 0))

    def advance(
        self,
        transaction: Transaction,
        phase: Phase,
        *,
        timeout: timedelta | None = None,
        error: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Transaction:
        """Record that `transaction` now is in `phase` (before the phase's effect is taken).

        Raises:
            JournalError: not an allowed transition from the phase on disk.
        """
        now = self._clock()
        encoded = self._encoded({**transaction.detail, **(detail or {})})
        with self._write():
            current = self._row(transaction.id)
            if not allowed(current.phase, phase):
                raise JournalError(f"{transaction.app}: cannot go from {current.phase} to {phase}")
            deadline = None if phase in FINAL or timeout is None else (now + timeout).isoformat()
            self._db.execute(
                "UPDATE transactions SET phase = ?, deadline = ?, error = COALESCE(?, error), detail = ?,"
                " updated_at = ? WHERE id = ?",
                (
                    phase,
                    deadline,
                    error[: self._bounds.journal_error_chars] if error else None,
                    encoded,
                    now.isoformat(),
                    transaction.id,
                ),
            )
            if phase in FINAL:
                self._prune()
        return self.get(transaction.id)

    def get(self, transaction_id: int) -> Transaction:
        return self._row(transaction_id)

    def unfinished(self) -> list[Transaction]:
        """Every transaction that neither committed nor rolled back, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM transactions WHERE phase NOT IN ('committed', 'rolled-back') ORDER BY id"
        ).fetchall()
        return [_transaction(row) for row in rows]

    def unsettled(self) -> list[Transaction]:
        """Finished transactions whose bookkeeping is not recorded as done (`settle`), oldest first."""
        rows = self._db.execute(
            "SELECT * FROM transactions WHERE phase IN ('committed', 'rolled-back') AND settled = 0 ORDER BY id"
        ).fetchall()
        return [_transaction(row) for row in rows]

    def settle(self, transaction: Transaction) -> None:
        """Record that the caller's bookkeeping of a finished transaction is done (durably).

        Raises:
            JournalError: the transaction is not finished.
        """
        with self._write():
            if not self._row(transaction.id).finished:
                raise JournalError(f"{transaction.app}: an unfinished update cannot be settled")
            self._db.execute("UPDATE transactions SET settled = 1 WHERE id = ?", (transaction.id,))

    def interruptions(self, app: str, mark: str) -> int:
        """How many of `app`'s latest transactions in a row carried out `mark` and were cut short (recovered)."""
        rows = self._db.execute(
            "SELECT * FROM transactions WHERE app = ? ORDER BY id DESC LIMIT ?", (app, self._bounds.journal_keep)
        ).fetchall()
        count = 0
        for tx in map(_transaction, rows):
            if tx.detail.get("mark") != mark or not (tx.error or "").startswith(INTERRUPTED):
                break
            count += 1
        return count

    def floor(self, app: str) -> int | None:
        """The release counter of the last release installed for `app`, even after it was unassigned."""
        row = self._db.execute("SELECT release_counter FROM release_floors WHERE app = ?", (app,)).fetchone()
        return None if row is None else int(row["release_counter"])

    def set_floor(self, app: str, release_counter: int) -> None:
        """Record that `app` now runs a release with this counter (durably, before the installed record).

        The floor goes down only when the release installed was a signed rollback: the caller
        has checked that (`agent.verify`), so this simply records what was installed.
        """
        with self._write():
            self._db.execute(
                "INSERT INTO release_floors (app, release_counter) VALUES (?, ?)"
                " ON CONFLICT (app) DO UPDATE SET release_counter = excluded.release_counter",
                (app, release_counter),
            )

    def last(self, app: str) -> Transaction | None:
        row = self._db.execute("SELECT * FROM transactions WHERE app = ? ORDER BY id DESC LIMIT 1", (app,)).fetchone()
        return None if row is None else _transaction(row)

    def _open(self, app: str) -> Transaction | None:
        row = self._db.execute(
            "SELECT * FROM transactions WHERE app = ? AND phase NOT IN ('committed', 'rolled-back')", (app,)
        ).fetchone()
        return None if row is None else _transaction(row)

    def _row(self, transaction_id: int) -> Transaction:
        row = self._db.execute("SELECT * FROM transactions WHERE id = ?", (transaction_id,)).fetchone()
        if row is None:
            raise JournalError(f"no transaction {transaction_id}")
        return _transaction(row)

    def _prune(self) -> None:
        self._db.execute(
            "DELETE FROM transactions WHERE phase IN ('committed', 'rolled-back') AND settled = 1 AND id NOT IN"
            " (SELECT id FROM transactions WHERE phase IN ('committed', 'rolled-back') ORDER BY id DESC LIMIT ?)",
            (self._bounds.journal_keep,),
        )

    def _write(self) -> AbstractContextManager[None]:
        return immediate(self._db, JournalError, "journal")

    def _encoded(self, detail: dict[str, Any]) -> str:
        encoded = json.dumps(detail, sort_keys=True)
        if len(encoded) > self._bounds.journal_detail_bytes:
            raise JournalError("transaction detail too large")
        return encoded


def _transaction(row: sqlite3.Row) -> Transaction:
    return Transaction(
        id=row["id"],
        app=row["app"],
        from_release=row["from_release"],
        to_release=row["to_release"],
        strategy=row["strategy"],
        phase=row["phase"],
        deadline=datetime.fromisoformat(row["deadline"]) if row["deadline"] else None,
        error=row["error"],
        detail=json.loads(row["detail"]),
        started_at=datetime.fromisoformat(row["started_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        settled=bool(row["settled"]),
    )
