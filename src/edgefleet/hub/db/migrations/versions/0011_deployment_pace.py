"""Paced rollouts: a deployment may bound how many devices are told and not yet downloading.

`last_held_at`: the last scheduler pass that held devices of the current wave back (the wave's
timeout counts from it).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.hub.db.models import UtcDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("max_pending", sa.Integer, nullable=True))
        batch.add_column(sa.Column("last_held_at", UtcDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("last_held_at")
        batch.drop_column("max_pending")
