"""The Alembic migrations build exactly the schema the models describe, on each database."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from edgefleet.hub.db.migrate import upgrade
from edgefleet.hub.db.models import Base

pytestmark = pytest.mark.integration


def test_migrated_schema_matches_the_models(hub):
    with hub.store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(hub):
    upgrade(hub.store)
    upgrade(hub.store)
    with hub.store.transaction() as tx:
        assert tx.audit_head() == (0, "0" * 64)
