"""Events the device must tell the hub, kept on disk until the hub acknowledges them (bounded, in order).

One SQLite file (WAL, synchronous=FULL) next to the journal. Each event gets a sequence
number that only grows; the hub records events idempotently by that number, so a batch
re-sent after a lost answer is not recorded twice. When the outbox is full the oldest
events are dropped and counted; the count travels with the next batch so the hub knows
what it missed. The latest state report is kept too (a newer one replaces it).

An event added with a key is added once: adding it again (bookkeeping redone after a
crash, `agent.runner`) keeps the first. As many keys are remembered as events are kept
(`Bounds.outbox_events`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.durable import connect, immediate
from edgefleet.agent.errors import OutboxError as OutboxError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS report (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS added (key TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    """Events waiting for the hub, oldest first, and how many were dropped before them."""

    events: tuple[tuple[int, dict[str, Any]], ...]
    dropped: int


class Outbox:
    """The outbox file of one agent."""

    def __init__(self, path: Path, *, bounds: Bounds = DEFAULT_BOUNDS) -> None:
        self._limit = bounds.outbox_events
        self._event_bytes = bounds.event_bytes
        self._batch = bounds.event_batch
        self._db = connect(path, _SCHEMA, OutboxError, "outbox")

    def close(self) -> None:
        self._db.close()

    def add(self, event: Mapping[str, Any], *, key: str | None = None) -> int:
        """Keep `event` (a JSON object without `seq`); returns its sequence number. Drops the oldest when full.

        With `key`, an event added before under the same key is not added again (its number is returned).
        """
        body = json.dumps(dict(event), sort_keys=True)
        if len(body) > self._event_bytes:
            raise OutboxError(f"event of {len(body)} bytes is over the limit of {self._event_bytes}")
        with immediate(self._db, OutboxError, "outbox"):
            if key is not None:
                found = self._db.execute("SELECT seq FROM added WHERE key = ?", (key,)).fetchone()
                if found is not None:
                    return int(found[0])
            seq = int(self._db.execute("INSERT INTO events (body) VALUES (?)", (body,)).lastrowid or 0)
            if key is not None:
                self._db.execute("INSERT INTO added (key, seq) VALUES (?, ?)", (key, seq))
                self._db.execute(
                    "DELETE FROM added WHERE seq NOT IN (SELECT seq FROM added ORDER BY seq DESC LIMIT ?)",
                    (self._limit,),
                )
            (count,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
            excess = count - self._limit
            if excess > 0:
                self._db.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)", (excess,)
                )
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES ('dropped', ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    (excess,),
                )
        return seq

    def pending(self, limit: int | None = None) -> Pending:
        """The oldest events, `limit` of them (a batch: `Bounds.event_batch`), and the count of those dropped."""
        rows = self._read("SELECT seq, body FROM events ORDER BY seq LIMIT ?", (limit or self._batch,))
        return Pending(tuple((int(seq), json.loads(body)) for seq, body in rows), self.dropped())

    def dropped(self) -> int:
        rows = self._read("SELECT value FROM counters WHERE name = 'dropped'")
        return int(rows[0][0]) if rows else 0

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox unreadable: {exc}") from exc

    def acknowledge(self, through: int, *, dropped: int) -> None:
        """The hub has every event up to `through`, and was told of `dropped` dropped ones."""
        with immediate(self._db, OutboxError, "outbox"):
            self._db.execute("DELETE FROM events WHERE seq <= ?", (through,))
            self._db.execute("UPDATE counters SET value = MAX(0, value - ?) WHERE name = 'dropped'", (dropped,))

    def discard(self, through: int) -> None:
        """Drop the events up to `through` undelivered (the hub refused them); they count as dropped."""
        with immediate(self._db, OutboxError, "outbox"):
            (count,) = self._db.execute("SELECT COUNT(*) FROM events WHERE seq <= ?", (through,)).fetchone()
            self._db.execute("DELETE FROM events WHERE seq <= ?", (through,))
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES ('dropped', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (count,),
            )

    def keep_report(self, properties: Mapping[str, Any]) -> None:
        """The latest state report, until it is delivered (a newer one replaces it)."""
        body = json.dumps(dict(properties), sort_keys=True, default=str)
        with immediate(self._db, OutboxError, "outbox"):
            self._db.execute("INSERT OR REPLACE INTO report (id, body) VALUES (1, ?)", (body,))

    def report(self) -> dict[str, Any] | None:
        rows = self._read("SELECT body FROM report WHERE id = 1")
        return dict(json.loads(rows[0][0])) if rows else None

    def delivered_report(self, properties: Mapping[str, Any]) -> None:
        """Forget the kept report if it still is `properties` (a newer one stays)."""
        body = json.dumps(dict(properties), sort_keys=True, default=str)
        with immediate(self._db, OutboxError, "outbox"):
            self._db.execute("DELETE FROM report WHERE id = 1 AND body = ?", (body,))
