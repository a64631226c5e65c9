"""The agent's own SQLite files: opened in WAL mode with synchronous writes; one durable write at a time.

SQLite's errors (a full or failing disk, a locked file) leave as the caller's own error
class, so the agent's loop handles them like any other trouble instead of dying.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def connect(path: Path, schema: str, error: type[Exception], what: str) -> sqlite3.Connection:
    """Open (creating) the file at `path` with `schema`; unusable files raised as `error`."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except sqlite3.Error as exc:
        raise error(f"{path}: unusable {what}: {exc}") from exc
    return db


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
