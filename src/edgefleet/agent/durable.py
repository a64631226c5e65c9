"""One durable SQLite write for the agent's own files: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error.

SQLite's errors (a full or failing disk, a locked file) leave as the caller's own error
class, so the agent's loop handles them like any other trouble instead of dying.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress


@contextmanager
def immediate(db: sqlite3.Connection, error: type[Exception], what: str) -> Iterator[None]:
    """A write transaction on `db` (opened with isolation_level=None); SQLite errors raised as `error`."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise error(f"{what} unwritable: {exc}") from exc
    try:
        yield
    except BaseException as exc:
        with suppress(sqlite3.Error):  # the original error says more
            db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise error(f"{what} unwritable: {exc}") from exc
        raise
    try:
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise error(f"{what} unwritable: {exc}") from exc
