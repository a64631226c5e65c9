"""One active device per key: a partial unique index, so racing enrollments cannot share a key.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.hub.db.models import ACTIVE_KEY_INDEX_WHERE

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "uq_devices_active_key",
        "devices",
        ["key_fingerprint"],
        unique=True,
        sqlite_where=sa.text(ACTIVE_KEY_INDEX_WHERE),
        postgresql_where=sa.text(ACTIVE_KEY_INDEX_WHERE),
    )


def downgrade() -> None:
    op.drop_index("uq_devices_active_key", table_name="devices")
