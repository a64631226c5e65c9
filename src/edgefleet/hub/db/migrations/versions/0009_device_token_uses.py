"""Device tokens that made a change, by their jti, so a replay within their lifetime is refused.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.hub.db.models import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_token_uses",
        sa.Column("device_id", sa.String(36), primary_key=True),
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("expires_at", UtcDateTime, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("device_token_uses")
