"""Device <-> hub wire models: what the agent sends and what the hub answers, shared by both.

Every field is bounded so that a hostile peer cannot make the other side allocate much.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

API_PREFIX = "/api/v1"

TagKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")]
TagValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-:/@]{0,128}$")]
Tags = Annotated[dict[TagKey, TagValue], Field(max_length=64)]
FleetName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,62}$")]
DeviceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
Pem = Annotated[str, StringConstraints(min_length=1, max_length=16 * 1024)]
AppName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,62}$")]
"""An app's name: also a target-path segment and part of engine object names."""
IMAGE_BY_DIGEST_PATTERN = (
    r"^(?P<repo>[a-z0-9]+(?:[._\-/:][a-z0-9]+)*)(?::(?P<tag>[\w][\w.\-]{0,127}))?@(?P<digest>sha256:[0-9a-f]{64})$"
)
ImageRef = Annotated[str, StringConstraints(pattern=IMAGE_BY_DIGEST_PATTERN)]
"""An image pinned by digest, as manifests and signed targets name it."""
Arch = Literal["amd64", "arm64", "arm", "386", "riscv64", "ppc64le", "s390x"]
DeviceStatus = Literal["pending", "accepted", "rejected", "revoked"]

MAX_REPORTED_BYTES = 16 * 1024
"""Upper bound on the serialized reported properties of one device."""


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


class ReportedProperties(RequestModel):
    """Reported half of the device twin: facts the device states about itself."""

    properties: Annotated[dict[str, Any], Field(max_length=64)]


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


class TargetState(WireModel):
    """What a device must run: the cheap long-poll answer that tells the agent to look again.

    It is only a hint: the agent acts solely on the director's signed metadata (which
    carries the same assignments and environment) after verifying it.
    """

    device_id: DeviceId
    apps: Annotated[dict[str, AppTarget], Field(max_length=64)]
    environment: Environment = Field(default_factory=dict)
