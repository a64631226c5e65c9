"""Apply the hub's Alembic migrations at start-up (and in `hub init`), once per database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from edgefleet.hub.db.store import Store
from edgefleet.hub.errors import HubConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_ID = 0x6564676566  # "edgef": hub replicas starting together migrate one at a time


def upgrade(store: Store) -> None:
    """Bring the schema to the latest revision; safe to call from several processes at once."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        _upgrade(store, config)
    except OperationalError as exc:
        raise HubConfigError("database_unavailable", f"cannot reach the database: {exc.orig}") from exc


def _upgrade(store: Store, config: Config) -> None:
    with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _PG_LOCK_ID})
            connection.commit()
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if store.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_LOCK_ID})
                connection.commit()
