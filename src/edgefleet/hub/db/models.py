"""SQLAlchemy table mappings of the hub's registry, tokens, operators and audit chain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Index, Integer, String, Text, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes that round-trip exactly on SQLite and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every hub table."""


ACTIVE_KEY_INDEX_WHERE = "status IN ('pending', 'accepted')"


class DeviceRow(Base):
    __tablename__ = "devices"
    # One key, one active identity, even when two enrollments race.
    __table_args__ = (
        Index(
            "uq_devices_active_key",
            "key_fingerprint",
            unique=True,
            sqlite_where=text(ACTIVE_KEY_INDEX_WHERE),
            postgresql_where=text(ACTIVE_KEY_INDEX_WHERE),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    fleet: Mapped[str] = mapped_column(String(63), index=True)
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    arch: Mapped[str] = mapped_column(String(16))
    hostname: Mapped[str | None] = mapped_column(String(253))
    public_key_pem: Mapped[str] = mapped_column(Text)
    key_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    cert_pem: Mapped[str | None] = mapped_column(Text)
    cert_serial: Mapped[str | None] = mapped_column(String(64))
    cert_not_after: Mapped[datetime | None] = mapped_column(UtcDateTime)
    enrollment_token_id: Mapped[str | None] = mapped_column(String(32))
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reported: Mapped[dict[str, Any]] = mapped_column(JSON)


class EnrollmentTokenRow(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    fleet: Mapped[str] = mapped_column(String(63))
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    max_uses: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer)
    require_approval: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class UserRow(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    description: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AuditRow(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """Single row holding the chain's last sequence number and hash; its row lock serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))


class RepoMetadataRow(Base):
    """One version of one role's TUF metadata in the hub's image repository, as signed."""

    __tablename__ = "repo_metadata"

    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReleaseRow(Base):
    """A release (manifest target) the image repository has offered, with what the director needs."""

    __tablename__ = "releases"

    app: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    release_counter: Mapped[int] = mapped_column(BigInteger)
    architectures: Mapped[list[str]] = mapped_column(JSON)
    manifest_path: Mapped[str] = mapped_column(String(256))
    manifest_length: Mapped[int] = mapped_column(BigInteger)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    artifacts: Mapped[list[str]] = mapped_column(JSON)
    signer_keyids: Mapped[list[str]] = mapped_column(JSON)
    targets_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    role: Mapped[str] = mapped_column(String(32), server_default=text("'targets'"))


class AssignmentRow(Base):
    """What one app on one device must run."""

    __tablename__ = "assignments"

    device_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    release_counter: Mapped[int] = mapped_column(BigInteger)
    rollback: Mapped[bool] = mapped_column(Boolean)
    assigned_by: Mapped[str] = mapped_column(String(128))
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime)
    retry: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class DirectorMetadataRow(Base):
    """One version of one role of one device's director metadata, as signed."""

    __tablename__ = "director_metadata"

    device_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FleetEnvironmentRow(Base):
    """One environment variable an operator set for every device of a fleet."""

    __tablename__ = "fleet_environment"

    fleet: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DeviceEnvironmentRow(Base):
    """One environment variable an operator set for one device; it overrides the fleet's."""

    __tablename__ = "device_environment"

    device_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DeviceUpdateRow(Base):
    """The latest update outcome one device reported for one app."""

    __tablename__ = "device_updates"

    device_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app: Mapped[str] = mapped_column(String(63), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(16))
    from_release: Mapped[str | None] = mapped_column(String(64))
    to_release: Mapped[str] = mapped_column(String(64))
    service: Mapped[str | None] = mapped_column(String(63))
    reason: Mapped[str | None] = mapped_column(Text)
    logs: Mapped[str | None] = mapped_column(Text)


class DeviceEventCursorRow(Base):
    """The highest event number recorded for one device: events up to it are never recorded again."""

    __tablename__ = "device_event_cursors"

    device_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    acknowledged: Mapped[int] = mapped_column(BigInteger)


class DeploymentRow(Base):
    """A deployment: a release for the devices a selector targets, rolled out in waves, and its progress."""

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    app: Mapped[str] = mapped_column(String(63), index=True)
    version: Mapped[str] = mapped_column(String(64))
    release_counter: Mapped[int] = mapped_column(BigInteger)
    target: Mapped[str] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer)
    waves: Mapped[str] = mapped_column(String(200))
    bake_seconds: Mapped[int] = mapped_column(Integer)
    wave_timeout_seconds: Mapped[int] = mapped_column(Integer)
    max_failure: Mapped[str] = mapped_column(String(16))
    on_failure: Mapped[str] = mapped_column(String(16))
    max_pending: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)
    wave: Mapped[int] = mapped_column(Integer)
    wave_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    bake_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    accepted_failures: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    last_held_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revision: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeploymentMemberRow(Base):
    """A device a deployment's rollout assigned: its wave, what is known of it, and what it ran before."""

    __tablename__ = "deployment_devices"

    deployment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(36), primary_key=True, index=True)
    wave: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime)
    fetched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WebSessionRow(Base):
    """A dashboard session (`hub.db.web_sessions`): keyed by the SHA-256 of its id, tied to an API token."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), index=True)
    username: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeviceTokenUseRow(Base):
    """A device token that already made a change (`hub.db.token_uses`): kept until the token expires."""

    __tablename__ = "device_token_uses"

    device_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
