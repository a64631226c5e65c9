"""The store's PostgreSQL connections: pinged only after sitting idle, read-only units without BEGIN and COMMIT."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from edgefleet.hub.db import Store
from edgefleet.hub.db import store as store_module
from edgefleet.hub.errors import HubConfigError

pytestmark = pytest.mark.integration


@pytest.fixture
def store(postgres_url: str | None) -> Iterator[Store]:
    if postgres_url is None:
        pytest.fail("these tests need PostgreSQL (EDGEFLEET_TEST_POSTGRES_URL)")
    store = Store(postgres_url)
    try:
        yield store
    finally:
        store.dispose()


def backend(store: Store) -> int:
    """The server process behind the connection the pool hands out next (LIFO: the one used last)."""
    with store.transaction() as tx:
        pid: int = tx._s.execute(text("SELECT pg_backend_pid()")).scalar_one()
    return pid


def terminate(store: Store, pid: int) -> None:
    dsn = make_url(store.url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            time.sleep(0.01)


def test_a_connection_idle_for_a_while_is_pinged_and_replaced_when_its_server_went(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed = backend(store)
    terminate(store, killed)
    monkeypatch.setattr(store_module, "PING_AFTER_IDLE", 0.0)  # every checkout counts as idle
    assert backend(store) != killed  # no error: the ping found it gone and the pool connected anew


def test_a_connection_used_a_moment_ago_is_not_pinged(store: Store) -> None:
    # What the ping would have caught fails this one unit of work, with the error the hub
    # answers 503 for; the pool is invalidated, so the next unit connects anew.
    killed = backend(store)
    terminate(store, killed)
    with pytest.raises(HubConfigError) as caught, store.transaction() as tx:
        tx.ping()
    assert caught.value.code == "database_unavailable"
    assert backend(store) != killed


def test_read_only_units_run_each_statement_on_its_own_and_writing_units_in_one_transaction(store: Store) -> None:
    started = text("SELECT transaction_timestamp()")
    with store.transaction(readonly=True) as tx:
        first = tx._s.execute(started).scalar_one()
        time.sleep(0.01)
        second = tx._s.execute(started).scalar_one()
    assert second > first  # autocommit: no BEGIN, each statement its own transaction
    # The same connection (the pool hands out the one used last), back as it came: a transaction.
    with store.transaction() as tx:
        first = tx._s.execute(started).scalar_one()
        time.sleep(0.01)
        second = tx._s.execute(started).scalar_one()
    assert second == first
