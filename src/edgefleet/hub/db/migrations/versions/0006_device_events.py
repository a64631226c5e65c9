"""Device events: each device's latest update outcome per app and highest recorded event; assignment retries.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.hub.db.models import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("retry", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "device_updates",
        sa.Column("device_id", sa.String(36), primary_key=True),
        sa.Column("app", sa.String(63), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("from_release", sa.String(64)),
        sa.Column("to_release", sa.String(64), nullable=False),
        sa.Column("service", sa.String(63)),
        sa.Column("reason", sa.Text),
        sa.Column("logs", sa.Text),
    )
    op.create_table(
        "device_event_cursors",
        sa.Column("device_id", sa.String(36), primary_key=True),
        sa.Column("acknowledged", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("device_event_cursors")
    op.drop_table("device_updates")
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("retry")
