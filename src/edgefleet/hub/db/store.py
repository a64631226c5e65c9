"""Database access for the hub: an engine per process, and `Tx`, one transaction with typed queries.

Services receive a `Tx` and never see SQLAlchemy; rows are mapped to `hub.records`.
SQLite runs in WAL mode and takes its write lock at BEGIN (``BEGIN IMMEDIATE``) so that
concurrent requests wait for each other instead of failing half-way.

A `Tx` notes the devices whose answers (`device/self`, `device/target`) it may change, so
their held long-polls wake: on PostgreSQL it sends ``pg_notify`` inside the transaction
(delivered to every hub process's `listen.DeviceListener` on commit); on SQLite, a single
process, `Store.transaction` wakes the store's `Notifier` itself after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from edgefleet.hub.db.listen import CHANNEL, EVERY_DEVICE, DeviceListener
from edgefleet.hub.db.models import (
    ApiTokenRow,
    AssignmentRow,
    AuditHeadRow,
    AuditRow,
    Base,
    DeviceEnvironmentRow,
    DeviceEventCursorRow,
    DeviceRow,
    DeviceUpdateRow,
    DirectorMetadataRow,
    EnrollmentTokenRow,
    FleetEnvironmentRow,
    ReleaseRow,
    RepoMetadataRow,
    UserRow,
)
from edgefleet.hub.db.rollouts import RolloutQueries
from edgefleet.hub.errors import BadRequestError, ConflictError, HubConfigError
from edgefleet.hub.notify import Notifier
from edgefleet.hub.records import (
    ApiToken,
    AssignedBy,
    Assignment,
    AuditEntry,
    Device,
    EnrollmentToken,
    EnvScope,
    ReleaseRecord,
    Role,
    UpdateOutcome,
    User,
)

Seal = Callable[[int, str, dict[str, Any]], str]
"""(seq, prev_hash, fields) -> hash: the audit chain's keyed digest, supplied by the caller."""

AUDIT_GENESIS = "0" * 64
_READONLY = "edgefleet_readonly"
_PG_REPOSITORY_LOCK = 0x6564676572657031
"""Transaction-scoped advisory lock serialising writers of repository and director metadata."""
_PG_ENVIRONMENT_LOCK = 0x6564676572656E76
"""Transaction-scoped advisory lock serialising writers of environment variables (their bounds span scopes)."""
DIRECTOR_VERSIONS_KEPT = 4
_BATCH = 1000
"""Rows per statement in bulk writes."""
_UNANNOUNCED_COLUMNS = frozenset({"last_seen_at", "updated_at"})
"""Device columns whose change alone is not announced: every other one is in a device's answers or its cached record."""
_MAX_NOTIFY_PAYLOAD = 1000
"""PostgreSQL refuses payloads of 8000 bytes or more; a longer key (never a device id) wakes every device."""


def _device(row: DeviceRow) -> Device:
    return Device(
        id=row.id,
        fleet=row.fleet,
        tags=dict(row.tags),
        status=row.status,
        arch=row.arch,
        hostname=row.hostname,
        public_key_pem=row.public_key_pem,
        key_fingerprint=row.key_fingerprint,
        cert_pem=row.cert_pem,
        cert_serial=row.cert_serial,
        cert_not_after=row.cert_not_after,
        enrollment_token_id=row.enrollment_token_id,
        enrolled_at=row.enrolled_at,
        updated_at=row.updated_at,
        last_seen_at=row.last_seen_at,
        reported=dict(row.reported),
    )


def _enrollment_token(row: EnrollmentTokenRow) -> EnrollmentToken:
    return EnrollmentToken(
        id=row.id,
        fleet=row.fleet,
        tags=dict(row.tags),
        max_uses=row.max_uses,
        used=row.used,
        require_approval=row.require_approval,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _user(row: UserRow) -> User:
    role: Role = row.role  # type: ignore[assignment]  # constrained by the services on write
    return User(name=row.name, role=role, created_at=row.created_at, disabled_at=row.disabled_at)


def _api_token(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        id=row.id,
        user=row.user,
        description=row.description,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def _release(row: ReleaseRow) -> ReleaseRecord:
    return ReleaseRecord(
        app=row.app,
        version=row.version,
        release_counter=row.release_counter,
        architectures=tuple(row.architectures),
        manifest_path=row.manifest_path,
        manifest_length=row.manifest_length,
        manifest_sha256=row.manifest_sha256,
        artifacts=tuple(row.artifacts),
        signer_keyids=tuple(row.signer_keyids),
        targets_version=row.targets_version,
        created_at=row.created_at,
        role=row.role,
    )


def _assignment(row: AssignmentRow) -> Assignment:
    return Assignment(
        device_id=row.device_id,
        app=row.app,
        version=row.version,
        release_counter=row.release_counter,
        rollback=row.rollback,
        assigned_by=_assigned_by(row.assigned_by),
        assigned_at=row.assigned_at,
        retry=row.retry,
    )


_ROLLOUT_PREFIX, _ROLLBACK_SUFFIX = "deployment:", ":rollback"


def _assigned_by(stored: str) -> AssignedBy:
    """The column's text (`str(AssignedBy)`) read back into its parts: here, and nowhere else."""
    if not stored.startswith(_ROLLOUT_PREFIX):
        return AssignedBy.operator(stored)
    name = stored.removeprefix(_ROLLOUT_PREFIX)
    if name.endswith(_ROLLBACK_SUFFIX):
        return AssignedBy.rollout(name.removesuffix(_ROLLBACK_SUFFIX), rollback=True)
    return AssignedBy.rollout(name)


def _assignment_values(assignment: Assignment) -> dict[str, Any]:
    values = {name: getattr(assignment, name) for name in Assignment.__slots__}
    values["assigned_by"] = str(assignment.assigned_by)
    return values


def _update_outcome(row: DeviceUpdateRow) -> UpdateOutcome:
    return UpdateOutcome(**{name: getattr(row, name) for name in UpdateOutcome.__slots__})


def _audit(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        detail=dict(row.detail),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class Tx(RolloutQueries):
    """One database transaction with the queries the hub's services need."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._postgres = session.get_bind().dialect.name == "postgresql"
        self.changed: set[str] = set()
        """Devices whose answers this transaction may change; `EVERY_DEVICE` for all of them."""

    def _changes_many(self, device_ids: Collection[str]) -> None:
        """`_changes` for many devices, in one statement on PostgreSQL (a wave can assign thousands)."""
        new = sorted({d for d in device_ids if len(d) <= _MAX_NOTIFY_PAYLOAD} - self.changed)
        if not new:
            return
        self.changed.update(new)
        if self._postgres:
            self._s.execute(
                text("SELECT pg_notify(:channel, device) FROM unnest(CAST(:devices AS text[])) AS device"),
                {"channel": CHANNEL, "devices": new},
            )

    def _changes(self, device_id: str | None) -> None:
        """Note that the device's answers (None: every device's) may change when this transaction commits."""
        key = EVERY_DEVICE if device_id is None or len(device_id) > _MAX_NOTIFY_PAYLOAD else device_id
        if key in self.changed:
            return
        self.changed.add(key)
        if self._postgres:
            # Queued by PostgreSQL and delivered to every listening hub process on commit only.
            self._s.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": key})

    # --- devices ---------------------------------------------------------------------

    def insert_device(self, device: Device) -> None:
        self._s.add(DeviceRow(**{name: getattr(device, name) for name in Device.__slots__}))
        self._flush_device()

    def _flush_device(self) -> None:
        try:
            self._s.flush()
        except IntegrityError as exc:
            # The partial unique index on active keys: a concurrent enrollment won the race.
            raise ConflictError("key_already_enrolled", "this key already belongs to an enrolled device") from exc

    def get_device(self, device_id: str, *, for_update: bool = False) -> Device | None:
        """The device; with `for_update`, its row locked (PostgreSQL) and re-read for a read-modify-write."""
        row = self._s.get(DeviceRow, device_id, with_for_update=for_update, populate_existing=for_update)
        return None if row is None else _device(row)

    def list_devices(self, *, fleet: str | None, status: str | None, after: str | None, limit: int) -> list[Device]:
        query = select(DeviceRow).order_by(DeviceRow.id).limit(limit)
        if fleet is not None:
            query = query.where(DeviceRow.fleet == fleet)
        if status is not None:
            query = query.where(DeviceRow.status == status)
        if after is not None:
            query = query.where(DeviceRow.id > after)
        return [_device(row) for row in self._s.scalars(query)]

    def find_active_device_by_key(self, fingerprint: str, *, statuses: Sequence[str]) -> Device | None:
        query = (
            select(DeviceRow).where(DeviceRow.key_fingerprint == fingerprint, DeviceRow.status.in_(statuses)).limit(1)
        )
        row = self._s.scalar(query)
        return None if row is None else _device(row)

    def update_device(self, device_id: str, **values: Any) -> Device:
        row = self._s.get(DeviceRow, device_id, with_for_update=True)
        if row is None:
            raise KeyError(device_id)
        if any(getattr(row, name) != value for name, value in values.items() if name not in _UNANNOUNCED_COLUMNS):
            self._changes(device_id)
        for name, value in values.items():
            setattr(row, name, value)
        self._flush_device()
        return _device(row)

    # --- enrollment tokens -------------------------------------------------------------

    def insert_enrollment_token(self, token: EnrollmentToken, *, token_hash: str) -> None:
        values = {name: getattr(token, name) for name in EnrollmentToken.__slots__}
        self._s.add(EnrollmentTokenRow(token_hash=token_hash, **values))
        self._s.flush()

    def get_enrollment_token(self, token_id: str) -> EnrollmentToken | None:
        row = self._s.get(EnrollmentTokenRow, token_id)
        return None if row is None else _enrollment_token(row)

    def find_enrollment_token(self, token_hash: str) -> EnrollmentToken | None:
        row = self._s.scalar(select(EnrollmentTokenRow).where(EnrollmentTokenRow.token_hash == token_hash))
        return None if row is None else _enrollment_token(row)

    def list_enrollment_tokens(self, *, limit: int) -> list[EnrollmentToken]:
        query = select(EnrollmentTokenRow).order_by(EnrollmentTokenRow.created_at).limit(limit)
        return [_enrollment_token(row) for row in self._s.scalars(query)]

    def consume_enrollment_token(self, token_id: str, *, now: datetime) -> bool:
        """Count one use, atomically, only if the token is still usable; False otherwise."""
        result = self._s.execute(
            update(EnrollmentTokenRow)
            .where(
                EnrollmentTokenRow.id == token_id,
                EnrollmentTokenRow.used < EnrollmentTokenRow.max_uses,
                EnrollmentTokenRow.revoked_at.is_(None),
                EnrollmentTokenRow.expires_at > now,
            )
            .values(used=EnrollmentTokenRow.used + 1)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def revoke_enrollment_token(self, token_id: str, *, now: datetime) -> None:
        self._s.execute(
            update(EnrollmentTokenRow)
            .where(EnrollmentTokenRow.id == token_id, EnrollmentTokenRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    # --- users and API tokens ------------------------------------------------------------

    def insert_user(self, user: User) -> None:
        if self._s.get(UserRow, user.name) is not None:
            raise ConflictError("user_exists", f"user {user.name!r} already exists")
        self._s.add(UserRow(name=user.name, role=user.role, created_at=user.created_at, disabled_at=user.disabled_at))
        try:
            self._s.flush()
        except IntegrityError as exc:
            raise ConflictError("user_exists", f"user {user.name!r} already exists") from exc

    def get_user(self, name: str) -> User | None:
        row = self._s.get(UserRow, name)
        return None if row is None else _user(row)

    def list_users(self, *, limit: int) -> list[User]:
        return [_user(row) for row in self._s.scalars(select(UserRow).order_by(UserRow.name).limit(limit))]

    def count_users(self) -> int:
        return int(self._s.scalar(select(func.count()).select_from(UserRow)) or 0)

    def disable_user(self, name: str, *, now: datetime) -> None:
        self._s.execute(update(UserRow).where(UserRow.name == name).values(disabled_at=now))

    def insert_api_token(self, token: ApiToken, *, token_hash: str) -> None:
        values = {name: getattr(token, name) for name in ApiToken.__slots__}
        self._s.add(ApiTokenRow(token_hash=token_hash, **values))
        self._s.flush()

    def find_api_token(self, token_hash: str) -> ApiToken | None:
        row = self._s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash))
        return None if row is None else _api_token(row)

    def get_api_token(self, token_id: str) -> ApiToken | None:
        row = self._s.get(ApiTokenRow, token_id)
        return None if row is None else _api_token(row)

    def list_api_tokens(self, *, user: str | None, limit: int) -> list[ApiToken]:
        query = select(ApiTokenRow).order_by(ApiTokenRow.created_at).limit(limit)
        if user is not None:
            query = query.where(ApiTokenRow.user == user)
        return [_api_token(row) for row in self._s.scalars(query)]

    def revoke_api_token(self, token_id: str, *, now: datetime) -> None:
        self._s.execute(
            update(ApiTokenRow)
            .where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    def touch_api_token(self, token_id: str, *, now: datetime) -> None:
        self._s.execute(update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(last_used_at=now))

    # --- image repository metadata ---------------------------------------------------------

    def latest_metadata(self, role: str, *, for_update: bool = False) -> tuple[int, str] | None:
        """(version, body) of the newest stored metadata of `role`."""
        query = select(RepoMetadataRow).where(RepoMetadataRow.role == role)
        query = query.order_by(RepoMetadataRow.version.desc()).limit(1)
        if for_update:
            query = query.with_for_update()
        row = self._s.scalar(query)
        return None if row is None else (row.version, row.body)

    def metadata_versions(self) -> dict[str, int]:
        """The newest stored version of every role (few: the top-level roles, the director's root, delegated roles)."""
        query = select(RepoMetadataRow.role, func.max(RepoMetadataRow.version)).group_by(RepoMetadataRow.role)
        return {role: int(version) for role, version in self._s.execute(query)}

    def get_metadata(self, role: str, version: int) -> str | None:
        row = self._s.get(RepoMetadataRow, (role, version))
        return None if row is None else row.body

    def insert_metadata(self, role: str, version: int, body: str, *, now: datetime) -> None:
        self._s.add(RepoMetadataRow(role=role, version=version, body=body, created_at=now))
        try:
            self._s.flush()
        except IntegrityError as exc:
            raise ConflictError("version_exists", f"{role} version {version} already exists") from exc

    def lock_repository(self) -> None:
        """Serialise writers of repository and director metadata until this transaction ends.

        SQLite already holds its one write lock (BEGIN IMMEDIATE); PostgreSQL takes an
        advisory lock, so two replicas never sign the same version twice.
        """
        self._advisory_lock(_PG_REPOSITORY_LOCK)

    def _advisory_lock(self, lock_id: int) -> None:
        """PostgreSQL: a lock held until the transaction ends. SQLite: BEGIN IMMEDIATE already serialises writers."""
        if self._s.get_bind().dialect.name == "postgresql":
            self._s.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})

    # --- releases, assignments, director metadata -----------------------------------------

    def insert_release(self, release: ReleaseRecord) -> None:
        values = {f: getattr(release, f) for f in ReleaseRecord.__slots__}
        for name in ("architectures", "artifacts", "signer_keyids"):
            values[name] = list(values[name])
        self._s.add(ReleaseRow(**values))
        self._s.flush()

    def get_release(self, app: str, version: str) -> ReleaseRecord | None:
        row = self._s.get(ReleaseRow, (app, version))
        return None if row is None else _release(row)

    def list_releases(self, *, app: str | None, limit: int) -> list[ReleaseRecord]:
        query = select(ReleaseRow).order_by(ReleaseRow.app, ReleaseRow.release_counter.desc()).limit(limit)
        if app is not None:
            query = query.where(ReleaseRow.app == app)
        return [_release(row) for row in self._s.scalars(query)]

    def max_release_counter(self, app: str) -> int:
        value = self._s.scalar(select(func.max(ReleaseRow.release_counter)).where(ReleaseRow.app == app))
        return int(value or 0)

    def _put(self, table: type[Base], key: tuple[str, ...], values: dict[str, Any]) -> None:
        """Insert the row, or overwrite the one with this primary key."""
        row = self._s.get(table, key)
        if row is None:
            self._s.add(table(**values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
        self._s.flush()

    def put_assignment(self, assignment: Assignment) -> None:
        self._put(AssignmentRow, (assignment.device_id, assignment.app), _assignment_values(assignment))
        self._changes(assignment.device_id)

    def put_assignments(self, assignments: Sequence[Assignment]) -> None:
        """Insert or overwrite many assignments of one app at once (a rollout's wave)."""
        apps = {a.app for a in assignments}
        if not assignments:
            return
        if len(apps) != 1:
            raise ValueError("put_assignments takes assignments of one app")
        self._s.flush()
        for start in range(0, len(assignments), _BATCH):
            chunk = assignments[start : start + _BATCH]
            devices = [a.device_id for a in chunk]
            self._s.execute(
                delete(AssignmentRow).where(AssignmentRow.app == chunk[0].app, AssignmentRow.device_id.in_(devices))
            )
            self._s.execute(insert(AssignmentRow), [_assignment_values(a) for a in chunk])
        self._s.expire_all()  # rows loaded earlier in this transaction are stale now
        self._changes_many([a.device_id for a in assignments])

    def assignments_of_app(self, app: str) -> dict[str, Assignment]:
        """Device id -> its assignment of `app`, for every device that has one."""
        query = select(AssignmentRow).where(AssignmentRow.app == app).execution_options(populate_existing=True)
        return {row.device_id: _assignment(row) for row in self._s.scalars(query)}

    def delete_assignment(self, device_id: str, app: str) -> None:
        self._s.execute(delete(AssignmentRow).where(AssignmentRow.device_id == device_id, AssignmentRow.app == app))
        self._changes(device_id)

    def list_assignments(self, device_id: str) -> list[Assignment]:
        query = select(AssignmentRow).where(AssignmentRow.device_id == device_id).order_by(AssignmentRow.app)
        return [_assignment(row) for row in self._s.scalars(query)]

    def latest_director(self, device_id: str, role: str) -> tuple[int, str] | None:
        query = select(DirectorMetadataRow).where(
            DirectorMetadataRow.device_id == device_id, DirectorMetadataRow.role == role
        )
        row = self._s.scalar(query.order_by(DirectorMetadataRow.version.desc()).limit(1))
        return None if row is None else (row.version, row.body)

    def get_director(self, device_id: str, role: str, version: int) -> str | None:
        row = self._s.get(DirectorMetadataRow, (device_id, role, version))
        return None if row is None else row.body

    def insert_director(self, device_id: str, role: str, version: int, body: str, *, now: datetime) -> None:
        """Store a new version and drop all but the newest few (devices only ever fetch the newest)."""
        self._s.add(DirectorMetadataRow(device_id=device_id, role=role, version=version, body=body, created_at=now))
        self._s.execute(
            delete(DirectorMetadataRow).where(
                DirectorMetadataRow.device_id == device_id,
                DirectorMetadataRow.role == role,
                DirectorMetadataRow.version <= version - DIRECTOR_VERSIONS_KEPT,
            )
        )
        self._s.flush()

    # --- device events -------------------------------------------------------------------

    def events_acknowledged(self, device_id: str) -> int:
        """The highest event number recorded for the device (0 when none was)."""
        row = self._s.get(DeviceEventCursorRow, device_id)
        return 0 if row is None else row.acknowledged

    def acknowledge_events(self, device_id: str, seq: int) -> None:
        row = self._s.get(DeviceEventCursorRow, device_id)
        if row is None:
            self._s.add(DeviceEventCursorRow(device_id=device_id, acknowledged=seq))
        else:
            row.acknowledged = seq
        self._s.flush()

    def put_update_outcome(self, outcome: UpdateOutcome) -> None:
        """Replace the device's latest outcome for the outcome's app."""
        values = {name: getattr(outcome, name) for name in UpdateOutcome.__slots__}
        self._put(DeviceUpdateRow, (outcome.device_id, outcome.app), values)

    def list_update_outcomes(self, device_id: str) -> list[UpdateOutcome]:
        query = select(DeviceUpdateRow).where(DeviceUpdateRow.device_id == device_id).order_by(DeviceUpdateRow.app)
        return [_update_outcome(row) for row in self._s.scalars(query)]

    # --- environment variables -----------------------------------------------------------

    @staticmethod
    def _env_owner(scope: EnvScope) -> Any:
        return FleetEnvironmentRow.fleet if scope == "fleet" else DeviceEnvironmentRow.device_id

    def get_environment(self, scope: EnvScope, owner: str) -> dict[str, str]:
        """Variables set at one scope (`owner` is the fleet's name or the device's id), in name order."""
        row = FleetEnvironmentRow if scope == "fleet" else DeviceEnvironmentRow
        query = select(row.name, row.value).where(self._env_owner(scope) == owner).order_by(row.name)
        return {row.name: row.value for row in self._s.execute(query)}

    def put_environment(self, scope: EnvScope, owner: str, values: dict[str, str]) -> None:
        """Set (insert or overwrite) variables at one scope."""
        if values:
            self._changes(None if scope == "fleet" else owner)
        for name, value in values.items():
            if scope == "fleet":
                fleet_row = self._s.get(FleetEnvironmentRow, (owner, name))
                if fleet_row is None:
                    self._s.add(FleetEnvironmentRow(fleet=owner, name=name, value=value))
                else:
                    fleet_row.value = value
            else:
                device_row = self._s.get(DeviceEnvironmentRow, (owner, name))
                if device_row is None:
                    self._s.add(DeviceEnvironmentRow(device_id=owner, name=name, value=value))
                else:
                    device_row.value = value
        self._s.flush()

    def delete_environment(self, scope: EnvScope, owner: str, names: Collection[str]) -> None:
        """Remove variables from one scope (names not set are ignored)."""
        if not names:
            return
        self._changes(None if scope == "fleet" else owner)
        row = FleetEnvironmentRow if scope == "fleet" else DeviceEnvironmentRow
        self._s.execute(delete(row).where(self._env_owner(scope) == owner, row.name.in_(list(names))))
        self._s.flush()

    def max_device_environment_beyond(self, fleet: str, names: Collection[str]) -> int:
        """The most variables any one device of `fleet` sets under names outside `names` (0 when none)."""
        count = func.count(DeviceEnvironmentRow.name)
        query = (
            select(count)
            .join(DeviceRow, DeviceRow.id == DeviceEnvironmentRow.device_id)
            .where(DeviceRow.fleet == fleet)
            .group_by(DeviceEnvironmentRow.device_id)
            .order_by(count.desc())
            .limit(1)
        )
        if names:
            query = query.where(DeviceEnvironmentRow.name.not_in(list(names)))
        return int(self._s.scalar(query) or 0)

    def lock_environment(self) -> None:
        """Serialise writers of environment variables until this transaction ends.

        A fleet's variables and each device's together must stay within the bounds, so
        two concurrent writers must not both check against the old values. SQLite already
        holds its one write lock (BEGIN IMMEDIATE); PostgreSQL takes an advisory lock.
        """
        self._advisory_lock(_PG_ENVIRONMENT_LOCK)

    # --- audit chain -------------------------------------------------------------------

    def append_audit(self, fields: dict[str, Any], *, seal: Seal) -> AuditEntry:
        """Append one entry after the current head; the head's row lock orders concurrent appends."""
        head = self._s.get(AuditHeadRow, 1, with_for_update=True)
        if head is None:
            raise HubConfigError("audit_head_missing", "audit head row missing: database not migrated")
        seq = head.seq + 1
        digest = seal(seq, head.hash, fields)
        row = AuditRow(seq=seq, prev_hash=head.hash, hash=digest, **fields)
        self._s.add(row)
        head.seq, head.hash = seq, digest
        self._s.flush()
        return _audit(row)

    def list_audit(self, *, after: int, limit: int, descending: bool = False) -> list[AuditEntry]:
        query = select(AuditRow).limit(limit)
        if descending:
            query = query.order_by(AuditRow.seq.desc())
            if after:
                query = query.where(AuditRow.seq < after)
        else:
            query = query.order_by(AuditRow.seq).where(AuditRow.seq > after)
        return [_audit(row) for row in self._s.scalars(query)]

    def audit_head(self) -> tuple[int, str]:
        head = self._s.get(AuditHeadRow, 1)
        return (0, AUDIT_GENESIS) if head is None else (head.seq, head.hash)

    def ping(self) -> None:
        self._s.execute(text("SELECT 1"))


class Store:
    """The hub's database: owns the engine; hands out one `Tx` per unit of work.

    Its `notifier` is woken for the devices each committed transaction changed (on SQLite
    directly; on PostgreSQL by the `listener`, which sees every hub process's commits).
    """

    def __init__(self, url: str, *, echo: bool = False, notifier: Notifier | None = None) -> None:
        self.url = url
        self.engine: Engine = _make_engine(url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.notifier = notifier or Notifier()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Tx]:
        """Run a unit of work: commit if the block returns, roll back if it raises.

        `readonly` units on SQLite start a deferred transaction, so they run beside a writer
        instead of queueing for the write lock.
        """
        with self._sessions() as session:
            try:
                with session.begin():
                    session.connection(execution_options={_READONLY: readonly})
                    tx = Tx(session)
                    yield tx
            except OperationalError as exc:
                raise HubConfigError("database_unavailable", f"database error: {exc.orig}") from exc
            except DataError as exc:
                # Values the schema let through but the database refuses (e.g. NUL in PostgreSQL text).
                raise BadRequestError("invalid_value", "a value cannot be stored (control characters?)") from exc
        if not tx.changed:
            return
        every = EVERY_DEVICE in tx.changed
        if self.dialect == "postgresql":
            # Committed: this process's caches forget at once, before its next request; its held
            # polls (and every other process's caches) are the listener's, which hears the commit.
            self.notifier.forget(None if every else tx.changed)
        elif every:
            self.notifier.wake_all()
        else:
            self.notifier.wake(tx.changed)

    def listener(self) -> DeviceListener | None:
        """A (not yet started) listener for every hub process's changes; None on SQLite, where commits wake directly."""
        if self.dialect != "postgresql":
            return None
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return DeviceListener(conninfo, self.notifier)

    def iter_audit(self, *, batch: int = 1000) -> Iterator[AuditEntry]:
        """Every audit entry in chain order, read in bounded batches."""
        after = 0
        while True:
            with self.transaction(readonly=True) as tx:
                rows: Sequence[AuditEntry] = tx.list_audit(after=after, limit=batch)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].seq

    def dispose(self) -> None:
        self.engine.dispose()


def _make_engine(url: str, *, echo: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control from the driver so BEGIN IMMEDIATE below is ours.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            readonly = connection.get_execution_options().get(_READONLY, False)
            connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    try:
        return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)
    except Exception as exc:  # any malformed URL or missing driver is a config error
        raise HubConfigError("bad_database_url", f"cannot use database URL: {exc}") from exc
