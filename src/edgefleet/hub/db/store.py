"""Database access for the hub: an engine per process, and `Tx`, one transaction with typed queries.

Services receive a `Tx` and never see SQLAlchemy; rows are mapped to `hub.records`. `Tx`'s
queries live in one module per aggregate (`devices`, `enrollment_tokens`, `operators`,
`repository`, `releases`, `assignments`, `director`, `device_events`, `environment`,
`audit_log`, `rollouts`), mixed in over `base.TxBase`; the device hot path's writes are in
`device_path`, and the spent device tokens in `token_uses`.
SQLite runs in WAL mode and takes its write lock at BEGIN (``BEGIN IMMEDIATE``) so that
concurrent requests wait for each other instead of failing half-way.

A `Tx` notes the devices whose answers (`device/self`, `device/target`) it may change, so
their held long-polls wake: on PostgreSQL it sends ``pg_notify`` inside the transaction
(delivered to every hub process's `listen.DeviceListener` on commit); on SQLite, a single
process, `Store.transaction` wakes the store's `Notifier` itself after the commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DataError, DisconnectionError, OperationalError
from sqlalchemy.orm import sessionmaker

from edgefleet.hub.db.assignments import AssignmentQueries
from edgefleet.hub.db.audit_log import AuditQueries
from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.device_events import DeviceEventQueries
from edgefleet.hub.db.devices import DeviceQueries
from edgefleet.hub.db.director import DirectorQueries
from edgefleet.hub.db.enrollment_tokens import EnrollmentTokenQueries
from edgefleet.hub.db.environment import EnvironmentQueries
from edgefleet.hub.db.listen import EVERY_DEVICE, DeviceListener
from edgefleet.hub.db.operators import OperatorQueries
from edgefleet.hub.db.releases import KeptReleases, ReleaseQueries
from edgefleet.hub.db.repository import RepositoryQueries
from edgefleet.hub.db.rollouts import RolloutQueries
from edgefleet.hub.errors import BadRequestError, HubConfigError
from edgefleet.hub.notify import Notifier
from edgefleet.hub.records import AuditEntry

_READONLY = "edgefleet_readonly"
_IDLE_SINCE = "edgefleet_idle_since"
PING_AFTER_IDLE = 5.0
"""Seconds a pooled PostgreSQL connection may sit unused before it is pinged on checkout."""


class Tx(
    DeviceQueries,
    EnrollmentTokenQueries,
    OperatorQueries,
    RepositoryQueries,
    ReleaseQueries,
    AssignmentQueries,
    DirectorQueries,
    DeviceEventQueries,
    EnvironmentQueries,
    AuditQueries,
    RolloutQueries,
    TxBase,
):
    """One database transaction with the queries the hub's services need, one mixin per aggregate."""


class Store:
    """The hub's database: owns the engine; hands out one `Tx` per unit of work.

    Its `notifier` is woken for the devices each committed transaction changed (on SQLite
    directly; on PostgreSQL by the `listener`, which sees every hub process's commits).
    """

    def __init__(self, url: str, *, echo: bool = False, notifier: Notifier | None = None) -> None:
        self.url = url
        self.engine: Engine = _make_engine(url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.notifier = notifier or Notifier()
        self.releases = KeptReleases()
        """Releases this process read (they never change once stored)."""

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Tx]:
        """Run a unit of work: commit if the block returns, roll back if it raises.

        `readonly` units on SQLite start a deferred transaction, so they run beside a writer
        instead of queueing for the write lock. On PostgreSQL they run without BEGIN and COMMIT
        (autocommit): at READ COMMITTED each statement reads its own snapshot either way, and
        they write nothing, so two round trips fewer change no answer.
        """
        options: dict[str, Any] = {_READONLY: readonly}
        if readonly and self.dialect == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        with self._sessions() as session:
            try:
                with session.begin():
                    session.connection(execution_options=options)
                    tx = Tx(session, readonly=readonly, releases=self.releases)
                    yield tx
            except OperationalError as exc:
                raise HubConfigError("database_unavailable", f"database error: {exc.orig}") from exc
            except DataError as exc:
                # Values the schema let through but the database refuses (e.g. NUL in PostgreSQL text).
                raise BadRequestError("invalid_value", "a value cannot be stored (control characters?)") from exc
        if not tx.changed:
            return
        every = EVERY_DEVICE in tx.changed
        if self.dialect == "postgresql":
            # Committed: this process's caches forget at once, before its next request; its held
            # polls (and every other process's caches) are the listener's, which hears the commit.
            self.notifier.forget(None if every else tx.changed)
        elif every:
            self.notifier.wake_all()
        else:
            self.notifier.wake(tx.changed)

    def listener(self) -> DeviceListener | None:
        """A (not yet started) listener for every hub process's changes; None on SQLite, where commits wake directly."""
        if self.dialect != "postgresql":
            return None
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return DeviceListener(conninfo, self.notifier)

    def iter_audit(self, *, batch: int = 1000) -> Iterator[AuditEntry]:
        """Every audit entry in chain order, read in bounded batches."""
        after = 0
        while True:
            with self.transaction(readonly=True) as tx:
                rows: Sequence[AuditEntry] = tx.list_audit(after=after, limit=batch)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].seq

    def dispose(self) -> None:
        self.engine.dispose()


def _make_engine(url: str, *, echo: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control from the driver so BEGIN IMMEDIATE below is ours.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            readonly = connection.get_execution_options().get(_READONLY, False)
            connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    try:
        # Last in, first out: under light load the same few connections stay warm (no ping).
        engine = create_engine(url, echo=echo, pool_size=10, max_overflow=10, pool_use_lifo=True)
    except Exception as exc:  # any malformed URL or missing driver is a config error
        raise HubConfigError("bad_database_url", f"cannot use database URL: {exc}") from exc
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use when it sat idle for `PING_AFTER_IDLE` (a restarted server, a dropped link).

    SQLAlchemy's pre-ping costs a round trip on every checkout; a connection used a moment
    ago is alive but for a server restart in between. Then the units on connections used in
    the last `PING_AFTER_IDLE` seconds fail (`database_unavailable`, a 503 that agents retry)
    and the first such error invalidates the whole pool, so later units connect anew.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any driver error: the pool drops this connection and takes another
            raise DisconnectionError(str(exc)) from exc
        if not alive:
            raise DisconnectionError("the connection did not answer its ping")
