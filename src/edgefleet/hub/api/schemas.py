"""Operator API request and response bodies (the device-facing ones live in `edgefleet.protocol`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, ConfigDict, Field, StringConstraints

from edgefleet.protocol import (
    AppName,
    Arch,
    DeviceStatus,
    Environment,
    EnvName,
    EnvValue,
    FleetName,
    RequestModel,
    TagKey,
    Tags,
    UpdateStatus,
    WireModel,
)
from edgefleet.protocol import Version as ReleaseVersion
from edgefleet.rollout import MAX_PENDING

Role = Literal["viewer", "operator", "admin"]
UserName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.\-]{0,63}$")]
Seconds = Annotated[int, Field(ge=1, le=10 * 365 * 86400)]


class TokenCreate(RequestModel):
    fleet: FleetName
    tags: Tags = Field(default_factory=dict)
    uses: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    ttl_seconds: Seconds = 86400
    require_approval: bool = False


class ReadModel(WireModel):
    """An answer built from a hub record's attributes (`Model.model_validate(record)`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)


class TokenOut(ReadModel):
    id: str
    fleet: str
    tags: dict[str, str]
    uses: int = Field(validation_alias=AliasChoices("uses", "max_uses"))
    used: int
    require_approval: bool
    created_at: datetime
    created_by: str
    expires_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret; shown once, stored only hashed.")


class DeviceOut(ReadModel):
    id: str
    fleet: str
    tags: dict[str, str]
    status: DeviceStatus
    arch: Arch
    hostname: str | None
    key_fingerprint: str
    cert_serial: str | None
    cert_not_after: datetime | None
    enrolled_at: datetime
    updated_at: datetime
    last_seen_at: datetime | None


class DevicePage(WireModel):
    items: list[DeviceOut]
    next_after: str | None = Field(description="Pass as `after` for the next page; null at the end.")


class TagUpdate(RequestModel):
    set: Tags = Field(default_factory=dict)
    remove: Annotated[list[TagKey], Field(max_length=64)] = Field(default_factory=list)


class TwinOut(ReadModel):
    device_id: str = Field(validation_alias=AliasChoices("device_id", "id"))
    status: DeviceStatus
    tags: dict[str, str]
    reported: dict[str, Any]
    updated_at: datetime


class UserCreate(RequestModel):
    name: UserName
    role: Role


class UserOut(ReadModel):
    name: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None


class ApiTokenCreate(RequestModel):
    user: UserName
    description: Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    ttl_seconds: Seconds | None = None

    def ttl(self) -> timedelta | None:
        return None if self.ttl_seconds is None else timedelta(seconds=self.ttl_seconds)


class ApiTokenOut(ReadModel):
    id: str
    user: str
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="The secret; shown once, stored only hashed.")


class AuditOut(ReadModel):
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerifyOut(WireModel):
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None
    problem: str | None


class Health(WireModel):
    status: Literal["ok"]
    database: str


class TufKey(WireModel):
    """A public key in TUF's metadata format, with its key id."""

    keyid: str
    keytype: str
    scheme: str
    keyval: dict[str, str]


class OnlineKeys(WireModel):
    """The hub's online TUF keys: a publisher lists snapshot and timestamp in the image repository's root."""

    director: TufKey
    snapshot: TufKey
    timestamp: TufKey


class RootAccepted(WireModel):
    """A root version the repository now trusts."""

    version: int
    expires: datetime


class TargetsAccepted(WireModel):
    """A targets version the repository now serves, and the releases it added."""

    version: int
    releases: list[str]
    role: str = Field(default="targets", description='"targets", or the delegated role whose targets these are.')


class ArtifactStored(WireModel):
    sha256: str
    length: int


class ReleaseOut(ReadModel):
    app: str
    version: str
    release_counter: int
    architectures: list[str]
    manifest_path: str
    manifest_sha256: str
    artifacts: list[str]
    signer_keyids: list[str]
    targets_version: int
    created_at: datetime
    role: str = Field(description='The role whose targets listed it when published: "targets" or a delegated role.')
    current: bool = Field(
        description="Whether a TUF client finds it in the image repository now (no: withdrawn, or its role revoked)."
    )


class AssignmentIn(RequestModel):
    app: AppName
    version: ReleaseVersion
    rollback: bool = Field(default=False, description="Allow an older release than the one assigned now.")


class AssignmentOut(ReadModel):
    device_id: str
    app: str
    version: str
    release_counter: int
    rollback: bool
    retry: int = Field(description="Retry generation: bumped by each operator retry, signed into the director targets.")
    assigned_by: Annotated[str, BeforeValidator(str)] = Field(
        description="An operator (user:NAME), or deployment:NAME (its rollout) or deployment:NAME:rollback"
    )
    assigned_at: datetime


class RetryIn(RequestModel):
    app: AppName | None = Field(default=None, description="Only this app's assignment; all of them when absent.")


class UpdateOut(ReadModel):
    """The latest update outcome the device reported for one app (from its events)."""

    status: UpdateStatus
    from_release: str | None
    to_release: str
    service: str | None
    reason: str | None
    logs: str | None
    at: datetime = Field(description="When the device recorded it, by its own clock.")


class AppStateOut(ReadModel):
    """One app: the assigned release (desired) beside what the device reports running."""

    app: str
    desired: str | None = Field(description="Assigned version; null when the app is no longer assigned.")
    release_counter: int | None
    rollback: bool
    reported: str | None = Field(description="Version the device reports in `reported.apps`; null when not reported.")
    services: dict[str, Any] = Field(description="Per-service status as the device reports it.")
    in_sync: bool


class DeviceStateOut(WireModel):
    """Desired (assignments, effective environment) beside reported (the twin) for one device."""

    device_id: str
    status: DeviceStatus
    last_seen_at: datetime | None
    apps: list[AppStateOut]
    environment: dict[str, str] = Field(description="Effective environment: the fleet's overlaid by the device's.")
    last_error: Any = Field(default=None, description="`reported.last_error`, as the device wrote it.")
    updates: dict[str, UpdateOut] = Field(description="Per app, the latest update outcome from the device's events.")
    reported: dict[str, Any]


class EnvironmentChange(RequestModel):
    """Set and remove environment variables in one step."""

    set: Environment = Field(default_factory=dict)
    unset: Annotated[list[EnvName], Field(max_length=128)] = Field(default_factory=list)


class EnvironmentValue(RequestModel):
    value: EnvValue


class FleetEnvironmentOut(WireModel):
    fleet: str
    environment: dict[str, str]


class DeviceEnvironmentOut(WireModel):
    device_id: str
    fleet: str
    environment: dict[str, str] = Field(description="Set on the device itself; overrides the fleet's.")
    fleet_environment: dict[str, str] = Field(description="Set on the device's fleet.")
    effective: dict[str, str] = Field(description="What the device's apps get: the fleet's overlaid by its own.")


# --- deployments -----------------------------------------------------------------------------

DeploymentName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,62}$")]
DeploymentState = Literal["active", "paused", "completed", "aborted", "rolled-back"]
WaveSeconds = Annotated[int, Field(ge=0, le=30 * 86400)]


class DeploymentIn(RequestModel):
    """A deployment as declared: which release, for which devices, how it rolls out."""

    name: DeploymentName | None = Field(default=None, description="Unique; APP-VERSION when left out.")
    app: AppName
    version: ReleaseVersion
    target: Annotated[str, StringConstraints(min_length=1, max_length=2048)] = Field(
        description="Tag selector, e.g. 'fleet=f1 and env=prod and not lab'; `fleet` is the device's fleet."
    )
    priority: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    waves: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        default="100%", description="Cumulative shares or counts, e.g. '1%,10%,50%,100%' or '5,50,100%'."
    )
    bake_seconds: WaveSeconds = Field(default=0, description="Hold after each wave; unhealthy devices count as failed.")
    wave_timeout_seconds: Annotated[int, Field(ge=60, le=30 * 86400)] = Field(
        default=3600, description="How long a wave waits for its devices; the rest count apart as offline."
    )
    max_failure: Annotated[str, StringConstraints(max_length=8)] = Field(
        default="0%", description="A wave whose failures pass this share pauses or rolls back."
    )
    on_failure: Literal["pause", "rollback"] = "pause"
    max_pending: Annotated[int, Field(ge=1, le=MAX_PENDING)] | None = Field(
        default=None,
        description="Pacing: at most this many devices told of the release and not yet downloading; "
        "the wave's others are told as those begin. None: each wave at once.",
    )


class DeploymentOut(ReadModel):
    id: str
    name: str
    app: str
    version: str
    target: str
    priority: int
    waves: str
    bake_seconds: int
    wave_timeout_seconds: int
    max_failure: str
    on_failure: str
    max_pending: int | None
    state: DeploymentState
    wave: int = Field(description="Current wave, counted from 1.")
    wave_started_at: datetime | None
    bake_started_at: datetime | None
    reason: str | None
    revision: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class DeploymentList(WireModel):
    items: list[DeploymentOut]


class WaveOut(WireModel):
    wave: int
    reach: int = Field(description="Devices reached once this wave is done (cumulative, of those targeted now).")
    size: int
    pending: int
    downloading: int
    updated: int
    failed: int
    offline: int
    restored: int


class DeploymentStatusOut(WireModel):
    deployment: DeploymentOut
    targeted: int = Field(
        description=(
            "Devices the deployment selects and that follow it now; for an aborted or rolled-back deployment, "
            "the devices it had reached."
        )
    )
    left: int = Field(description="Devices it assigned that it no longer selects (retagged, or a higher priority).")
    waves: list[WaveOut]


class AbortIn(RequestModel):
    rollback: bool = Field(default=False, description="Give every device the rollout assigned its previous release.")


class ApplyIn(RequestModel):
    deployments: Annotated[list[DeploymentIn], Field(max_length=100)]


class ApplyResult(WireModel):
    name: str
    outcome: Literal["created", "updated", "restarted", "unchanged"]


class ApplyOut(WireModel):
    results: list[ApplyResult]


class PreviewDevice(WireModel):
    device_id: str
    wave: int


class PreviewOut(WireModel):
    name: str = Field(description="The deployment name the canary order is drawn for.")
    total: int
    reach: list[int]
    devices: list[PreviewDevice] = Field(description="In canary order, up to the listing bound.")
    kept_by: dict[str, int] = Field(description="Higher-priority deployments and how many targets each keeps.")
    incompatible: int = Field(description="Selected devices with no image for their architecture.")


class WhyOut(WireModel):
    app: str
    assigned: str | None
    assigned_by: str | None
    deployment: str | None = Field(description="The deployment the device follows for this app now.")
    priority: int | None
    release: str | None
    member: str | None = Field(description="Its status in that rollout; null while its wave has not come.")
    wave: int | None
    losing: list[str] = Field(description="Deployments that select the device too but lose on priority.")
    explanation: str


class WhyList(WireModel):
    device_id: str
    apps: list[WhyOut]
