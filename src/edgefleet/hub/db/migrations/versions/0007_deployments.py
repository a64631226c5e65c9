"""Deployments and the devices their rollouts assigned.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.hub.db.models import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("app", sa.String(63), nullable=False, index=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("release_counter", sa.BigInteger, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("waves", sa.String(200), nullable=False),
        sa.Column("bake_seconds", sa.Integer, nullable=False),
        sa.Column("wave_timeout_seconds", sa.Integer, nullable=False),
        sa.Column("max_failure", sa.String(16), nullable=False),
        sa.Column("on_failure", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("wave_started_at", UtcDateTime),
        sa.Column("bake_started_at", UtcDateTime),
        sa.Column("accepted_failures", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "deployment_devices",
        sa.Column("deployment_id", sa.String(32), primary_key=True),
        sa.Column("device_id", sa.String(36), primary_key=True, index=True),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("previous_version", sa.String(64)),
        sa.Column("assigned_at", UtcDateTime, nullable=False),
        sa.Column("fetched_at", UtcDateTime),
    )


def downgrade() -> None:
    op.drop_table("deployment_devices")
    op.drop_table("deployments")
