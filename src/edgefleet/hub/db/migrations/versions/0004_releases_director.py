"""Releases offered by the image repository, per-device assignments, per-device director metadata.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.hub.db.models import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("app", sa.String(63), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("release_counter", sa.BigInteger, nullable=False),
        sa.Column("architectures", sa.JSON, nullable=False),
        sa.Column("manifest_path", sa.String(256), nullable=False),
        sa.Column("manifest_length", sa.BigInteger, nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("artifacts", sa.JSON, nullable=False),
        sa.Column("signer_keyids", sa.JSON, nullable=False),
        sa.Column("targets_version", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "assignments",
        sa.Column("device_id", sa.String(36), primary_key=True),
        sa.Column("app", sa.String(63), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("release_counter", sa.BigInteger, nullable=False),
        sa.Column("rollback", sa.Boolean, nullable=False),
        sa.Column("assigned_by", sa.String(128), nullable=False),
        sa.Column("assigned_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "director_metadata",
        sa.Column("device_id", sa.String(36), primary_key=True),
        sa.Column("role", sa.String(16), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("director_metadata")
    op.drop_table("assignments")
    op.drop_table("releases")
