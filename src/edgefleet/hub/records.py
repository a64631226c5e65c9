"""Plain records the hub's services and API pass around; the database layer maps rows to these."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: dict[Role, int] = {"viewer": 0, "operator": 1, "admin": 2}
EnvScope = Literal["fleet", "device"]
"""Where an operator sets environment variables: a whole fleet, or one device (which overrides its fleet)."""


@dataclass(frozen=True, slots=True)
class Device:
    """A device in the registry."""

    id: str
    fleet: str
    tags: dict[str, str]
    status: str
    arch: str
    hostname: str | None
    public_key_pem: str
    key_fingerprint: str
    cert_pem: str | None
    cert_serial: str | None
    cert_not_after: datetime | None
    enrollment_token_id: str | None
    enrolled_at: datetime
    updated_at: datetime
    last_seen_at: datetime | None
    reported: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EnrollmentToken:
    """An enrollment token's metadata; the token itself is known only by its hash."""

    id: str
    fleet: str
    tags: dict[str, str]
    max_uses: int
    used: int
    require_approval: bool
    created_at: datetime
    created_by: str
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class User:
    """An operator account; its role bounds every API token it owns."""

    name: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An operator API token's metadata; the secret is known only by its hash."""

    id: str
    user: str
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One link of the audit hash chain."""

    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    """A release the image repository offered (one manifest target of the top-level or a delegated role's targets)."""

    app: str
    version: str
    release_counter: int
    architectures: tuple[str, ...]
    manifest_path: str
    manifest_length: int
    manifest_sha256: str
    artifacts: tuple[str, ...]
    """SHA-256 of every artifact of the release (manifest and bundles): what an assigned device may fetch."""
    signer_keyids: tuple[str, ...]
    """The keys whose signatures met the threshold of the role that listed it."""
    targets_version: int
    """The version of that role's targets metadata that first listed it."""
    created_at: datetime
    role: str = "targets"
    """The role whose targets listed it when it was published: "targets", or a delegated role."""


@dataclass(frozen=True, slots=True)
class AssignedBy:
    """Who last wrote an assignment: an operator (their actor, `user:NAME`), or a deployment's rollout or rollback."""

    actor: str | None = None
    deployment: str | None = None
    rollback: bool = False
    """With `deployment`: written by that deployment's rollback (`deploy abort --rollback`), not its rollout."""

    @classmethod
    def operator(cls, actor: str) -> AssignedBy:
        return cls(actor=actor)

    @classmethod
    def rollout(cls, deployment: str, *, rollback: bool = False) -> AssignedBy:
        return cls(deployment=deployment, rollback=rollback)

    def __str__(self) -> str:
        """As operators read it, and as the API and the database keep it: `deployment:NAME[:rollback]` or the actor."""
        if self.deployment is not None:
            return f"deployment:{self.deployment}" + (":rollback" if self.rollback else "")
        return self.actor or "unknown"


@dataclass(frozen=True, slots=True)
class Assignment:
    """What one app on one device must run, set by an operator (later by deployments)."""

    device_id: str
    app: str
    version: str
    release_counter: int
    rollback: bool
    assigned_by: AssignedBy
    assigned_at: datetime
    retry: int = 0
    """Retry generation: an operator's retry bumps it; it never decreases for a device's app."""


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    """The latest update outcome a device reported for one app, from its event with number `seq`."""

    device_id: str
    app: str
    seq: int
    at: datetime
    status: str
    from_release: str | None
    to_release: str
    service: str | None
    reason: str | None
    logs: str | None


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment: APP@VERSION for the devices `target` selects, its rollout policy and its progress."""

    id: str
    name: str
    app: str
    version: str
    release_counter: int
    target: str
    priority: int
    waves: str
    bake_seconds: int
    wave_timeout_seconds: int
    max_failure: str
    on_failure: str
    max_pending: int | None
    """Pacing: devices told and not yet downloading at a time (None: each wave at once)."""
    state: str
    wave: int
    wave_started_at: datetime | None
    bake_started_at: datetime | None
    accepted_failures: int
    reason: str | None
    last_held_at: datetime | None
    """The last scheduler pass that held devices of the current wave back for the pace."""
    revision: int
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DeploymentMember:
    """A device a deployment's rollout assigned, with the release it had before (None: the app was new there)."""

    deployment_id: str
    device_id: str
    wave: int
    status: str
    previous_version: str | None
    assigned_at: datetime
    fetched_at: datetime | None
