"""Image repository metadata, one row per role and version, stored as signed.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.hub.db.models import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "repo_metadata",
        sa.Column("role", sa.String(32), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("repo_metadata")
