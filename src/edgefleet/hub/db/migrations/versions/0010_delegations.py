"""Delegated targets: each release records the role whose targets listed it when it was published.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("role", sa.String(32), nullable=False, server_default="targets"))


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("role")
