"""Device <-> hub wire models: what the agent sends and what the hub answers, shared by both.

Every field is bounded so that a hostile peer cannot make the other side allocate much.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

API_PREFIX = "/api/v1"

TagKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")]
TagValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-:/@]{0,128}$")]
Tags = Annotated[dict[TagKey, TagValue], Field(max_length=64)]
FleetName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,62}$")]
DEVICE_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN)]
Pem = Annotated[str, StringConstraints(min_length=1, max_length=16 * 1024)]
APP_NAME_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}$"
AppName = Annotated[str, StringConstraints(pattern=APP_NAME_PATTERN)]
"""An app's name: also a target-path segment and part of engine object names."""
Version = Annotated[str, StringConstraints(pattern=r"^[0-9][0-9A-Za-z.+\-]{0,63}$")]
"""A release's version: also a target-path segment."""
ServiceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$")]
"""A service's name inside a release, as its Compose file names it."""
IMAGE_BY_DIGEST_PATTERN = (
    r"^(?P<repo>[a-z0-9]+(?:[._\-/:][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}))?@(?P<digest>sha256:[0-9a-f]{64})$"
)
ImageRef = Annotated[str, StringConstraints(pattern=IMAGE_BY_DIGEST_PATTERN)]
"""An image pinned by digest, as manifests and signed targets name it.

The tag's characters are spelled out in ASCII, as the OCI distribution grammar means its
`\\w`: a regex `\\w` is Unicode-wide, which engines refuse anyway, and in pydantic's
linear-time engine `\\w{0,127}` alone compiled to 15 MiB in every process that builds a
model with this field (the agent's footprint, issue 17).
"""
Arch = Literal["amd64", "arm64", "arm", "386", "riscv64", "ppc64le", "s390x"]
DeviceStatus = Literal["pending", "accepted", "rejected", "revoked"]
RootTrust = Literal["pinned", "first-use"]
"""How a device came to trust the image repository's root: pinned by its digest, or on first use."""

MAX_REPORTED_BYTES = 16 * 1024
"""Upper bound on the serialized reported properties of one device."""
MAX_EVENTS_PER_BATCH = 100
MAX_EVENTS_BODY_BYTES = 2 * 1024 * 1024
"""Default bound on one serialized `DeviceEvents` batch (the hub's `max_events_bytes`)."""
MAX_STATUS_AGE_SECONDS = 60.0
"""The most a live view may give as `max_age` when it asks for a deployment's status."""
MAX_SEQ = 2**63 - 1
MAX_RETRY = 2**31 - 1
RetryGeneration = Annotated[int, Field(ge=0, le=MAX_RETRY)]
"""An assignment's retry generation: each operator retry bumps it; it never decreases for a device's app."""


class WireModel(BaseModel):
    """Strict base: unknown fields are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestModel(WireModel):
    """A request body: strict types as well (JSON `true` is not the integer 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EnrollRequest(RequestModel):
    """Sent once by a device: its CSR (proof of key possession) and the enrollment token."""

    token: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    csr: Pem
    arch: Arch
    hostname: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,252}$")] | None = None


class DeviceIdentity(WireModel):
    """The hub's answer to enrollment and to a device asking about itself."""

    device_id: DeviceId
    status: DeviceStatus
    fleet: FleetName
    certificate: Pem | None = Field(default=None, description="Device certificate; present once accepted.")
    certificate_not_after: datetime | None = None
    ca_bundle: Pem


class RenewRequest(RequestModel):
    """A device asks for a fresh certificate before its current one expires (new key allowed).

    A CSR for a different key must come with `key_change_proof`: a token signed by the
    current key, audience `edgefleet-hub/key-change`, whose `csr_sha256` names this CSR. So a
    replayed bearer token alone can never move the identity to someone else's key.
    """

    csr: Pem
    key_change_proof: Annotated[str, StringConstraints(max_length=4096)] | None = None


_NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL; other control characters (log colours) may stay
MAX_REASON_CHARS = 2000
"""Characters of an event's reason (and of a report's last error) the hub takes."""
MAX_LOGS_CHARS = 8192
"""Characters of a failing service's log tail the hub takes with an event."""
Label = Annotated[str, StringConstraints(max_length=64, pattern=_NO_NUL)]
"""A short free-form value a device states (an engine's state name, its version, the OS)."""
Count = Annotated[int, Field(ge=0, le=MAX_SEQ)]
MAX_APPS = 64
"""Apps in one device's report (a device runs at most 64: the hub's own bound on its assignments)."""


class ServiceReport(RequestModel):
    """One service of an app as the engine describes its container."""

    state: Label
    health: Label | None = None
    restarts: Count = 0
    release: Label | None = None
    image: Annotated[str, StringConstraints(max_length=512, pattern=_NO_NUL)] | None = None


class AppReport(RequestModel):
    """One app as the device runs it: the installed release and its services."""

    version: Version | None = None
    release_counter: Count | None = None
    services: Annotated[dict[ServiceName, ServiceReport], Field(max_length=64)] | None = None


class EngineReport(RequestModel):
    """The container engine on the device's socket (`agent.engine.info`)."""

    kind: Label
    version: Label
    api_version: Label


class ReportedState(RequestModel):
    """The device's reported state, the twin's reported half: shared by the agent, the simulator and the hub.

    A report is a patch: keys it sets replace the twin's, a key set to null is deleted, keys it
    leaves out stay. Agents of 0.1.0 (tests/golden) sent a subset of these keys; an unknown key
    is refused, as in every request.
    """

    apps: Annotated[dict[AppName, AppReport], Field(max_length=MAX_APPS)] | None = None
    agent_version: Label | None = None
    os: Label | None = None
    arch: Arch | None = None
    disk_free: Count | None = None
    mem_available: Count | None = None
    last_error: Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS, pattern=_NO_NUL)] | None = None
    repository_root: RootTrust | None = None
    """How the device came to trust the image repository's root (`agent.trust`)."""
    engine: EngineReport | None = None
    simulator: Label | None = None
    """Set by `edgefleet sim`'s devices only, so that no one takes them for real ones."""

    def patch(self) -> dict[str, Any]:
        """The keys this report sets (null: delete), as JSON values: what the hub merges into the twin."""
        return self.model_dump(mode="json", exclude_unset=True)


class ReportedProperties(RequestModel):
    """The body of a state report."""

    properties: ReportedState


class ErrorBody(WireModel):
    """Every 4xx/5xx body: a stable machine-readable code and one human sentence."""

    code: str
    message: str


EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, StringConstraints(max_length=4096)]
Environment = Annotated[dict[EnvName, EnvValue], Field(max_length=128)]


class AppTarget(WireModel):
    """One app's assigned release, as the target-state poll summarises it."""

    version: Annotated[str, StringConstraints(max_length=64)]
    release_counter: int
    rollback: bool = False
    retry: RetryGeneration = Field(default=0, description="The director's signed targets carry the same.")


class TargetState(WireModel):
    """What a device must run: the cheap long-poll answer that tells the agent to look again.

    It is only a hint: the agent acts solely on the director's signed metadata (which
    carries the same assignments and environment) after verifying it.
    """

    device_id: DeviceId
    apps: Annotated[dict[str, AppTarget], Field(max_length=64)]
    environment: Environment = Field(default_factory=dict)


# --- device events: what the agent buffers while offline and delivers in batches -----------

UpdateStatus = Literal["committed", "failed", "rolled-back", "interrupted", "no-space"]
"""How an update transaction ended on the device."""
Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]


def _iso_text(value: Any) -> Any:
    # Lax datetime parsing would take 12345 as a Unix time: only ISO 8601 text (or a datetime) is a time here.
    if isinstance(value, str | datetime):
        return value
    raise ValueError("a time is an ISO 8601 string with a UTC offset")


def _as_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:00-05:00 is past year 9999 in UTC
        raise ValueError("time out of range") from exc


EventTime = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_iso_text), AfterValidator(_as_utc)]
"""A time the device stamped (its clock, in UTC), sent as ISO 8601 with an offset."""


class UpdateEvent(RequestModel):
    """One update outcome as the device records it (`agent.runner.event`); its outbox numbers it (`DeviceEvent`)."""

    at: EventTime
    kind: Literal["update"] = "update"
    app: AppName
    from_release: Version | None = Field(default=None, description="The release before; none on a first install.")
    to_release: Version
    status: UpdateStatus
    service: ServiceName | None = Field(default=None, description="The service that failed, when one did.")
    reason: Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS, pattern=_NO_NUL)] | None = None
    logs: Annotated[str, StringConstraints(max_length=MAX_LOGS_CHARS, pattern=_NO_NUL)] | None = Field(
        default=None, description="The failing service's last log lines."
    )


class DeviceEvent(UpdateEvent):
    """One outcome the device recorded, numbered by the device: `seq` increases and is never reused."""

    seq: Seq


class DeviceEvents(RequestModel):
    """A batch of buffered events, oldest first; `dropped` counts events discarded before them (buffer full)."""

    events: Annotated[list[DeviceEvent], Field(max_length=MAX_EVENTS_PER_BATCH)] = Field(default_factory=list)
    dropped: Annotated[int, Field(ge=0, le=MAX_SEQ)] = 0

    @model_validator(mode="after")
    def _increasing(self) -> DeviceEvents:
        for earlier, later in zip(self.events, self.events[1:], strict=False):
            if later.seq <= earlier.seq:
                raise ValueError(f"events must be in increasing seq order ({later.seq} after {earlier.seq})")
        return self


class EventsAck(WireModel):
    """The hub's answer: every event up to this seq is recorded (0 when none ever was)."""

    acknowledged: Annotated[int, Field(ge=0, le=MAX_SEQ)]
