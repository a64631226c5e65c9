"""How a release appears in TUF metadata: target paths and the custom fields publisher, hub and agent check.

A release APP@VERSION is a set of image-repository targets under ``APP/VERSION/``: the
manifest (``compose.yaml``) and, when bundled, one OCI archive per image. The manifest
target's custom field names the release, its release counter (per app, increasing with
every release the publisher signs) and its architectures. The director's per-device
target repeats the fields that must match, plus the device, the rollback mark, the
device's operator-set environment and the operator's retry generation.

The top-level targets may delegate an app's paths to a named role (a team with keys of its
own): its name follows `DELEGATED_ROLE`, and `app_patterns` are the shell-style patterns
that match exactly that app's target paths. `root_digest` names an image-repository root the
way devices pin it (``repository_root_sha256``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, ValidationError

from edgefleet.protocol import AppName, Arch, DeviceId, Environment, ImageRef, RetryGeneration, WireModel
from edgefleet.protocol import Version as Version  # re-exported: where release versions were defined first

CUSTOM_KEY = "edgefleet"
DEVICE_FIELD = "x-edgefleet-device"
"""Field of a director's targets naming the device they are for (Uptane: never replayed to another device)."""
MANIFEST_NAME = "compose.yaml"
MAX_RELEASE_COUNTER = 2**31 - 1
MAX_BUNDLES = 32

Counter = Annotated[int, Field(ge=1, le=MAX_RELEASE_COUNTER)]
TARGET_PATH_PATTERN = (
    r"^[a-z0-9][a-z0-9\-]{0,62}/[0-9][0-9A-Za-z.+\-]{0,63}"
    r"/[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}(?:/[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127})?$"
)
TargetPath = Annotated[str, StringConstraints(pattern=TARGET_PATH_PATTERN)]
TARGET_PATH = re.compile(TARGET_PATH_PATTERN)
"""APP/VERSION/NAME or APP/VERSION/DIR/NAME; no '..', no leading dots, nothing absolute."""


class ManifestTarget(WireModel):
    """Custom field of a release's manifest target, signed by the publisher."""

    kind: Literal["manifest"] = "manifest"
    app: AppName
    version: Version
    release_counter: Counter
    architectures: Annotated[tuple[Arch, ...], Field(min_length=1, max_length=8)]
    bundles: Annotated[tuple[TargetPath, ...], Field(max_length=MAX_BUNDLES)] = ()


class BundleTarget(WireModel):
    """Custom field of an OCI archive target (an image exported for hubs without a registry)."""

    kind: Literal["bundle"] = "bundle"
    app: AppName
    version: Version
    image: ImageRef


class DirectorTarget(WireModel):
    """Custom field of a director target: the same release facts, plus whom it is for.

    `environment` is the device's effective operator-set environment (fleet values
    overlaid by the device's own), the same in each of the device's targets; the agent
    takes it from here only, after verifying the director's signature. `retry` is the
    assignment's retry generation: an operator bumps it to have the device try a release
    that failed there before; it never decreases for a device's app.
    """

    kind: Literal["manifest"] = "manifest"
    app: AppName
    version: Version
    release_counter: Counter
    device_id: DeviceId
    arch: Arch
    rollback: bool = False
    environment: Environment = Field(default_factory=dict)
    retry: RetryGeneration = 0


DELEGATED_ROLE_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,31}$"
DELEGATED_ROLE = re.compile(DELEGATED_ROLE_PATTERN)
"""A delegated role's name: 1 to 32 of a-z, 0-9 and '-' (it is a file name and a URL segment)."""
TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")
RESERVED_ROLE_PREFIX = "director"
"""The hub keeps the director's own metadata beside the image repository's under names like this."""
MAX_DELEGATED_ROLES = 16
"""Roles the top-level targets may delegate to at once."""
MAX_DELEGATION_PATHS = 32
"""Path patterns (or hash prefixes) of one delegated role."""
MAX_PATTERN_LENGTH = 256
MAX_ROLE_KEYS = 16
"""Keys of one delegated role."""


def role_name_problem(name: str) -> str | None:
    """Why `name` cannot be a delegated role's name, or None when it can."""
    if not DELEGATED_ROLE.fullmatch(name):
        return "a role name is 1 to 32 of a-z, 0-9 and '-', starting with a letter or digit"
    if name in TOP_LEVEL_ROLES:
        return f"{name} is a top-level role"
    if name.startswith(RESERVED_ROLE_PREFIX):
        return f"names starting with {RESERVED_ROLE_PREFIX!r} are reserved for the hub's director"
    return None


def app_patterns(app: str) -> tuple[str, str]:
    """The path patterns of exactly `app`'s targets: its manifests and its bundled images.

    Patterns match segment by segment (a `*` never crosses '/', and the segment counts must be
    equal), so ``APP/*/*`` is every ``APP/VERSION/compose.yaml`` and ``APP/*/images/*`` every
    ``APP/VERSION/images/sha256-HEX.tar``; no other app's path matches either.
    """
    return f"{app}/*/*", f"{app}/*/images/*"


def manifest_path(app: str, version: str) -> str:
    """Target path of a release's manifest."""
    return f"{app}/{version}/{MANIFEST_NAME}"


def bundle_path(app: str, version: str, image: str) -> str:
    """Target path of the OCI archive of `image` (pinned by digest) in a release."""
    digest = image.rsplit("@sha256:", 1)[-1]
    return f"{app}/{version}/images/sha256-{digest}.tar"


def parse_custom(custom: dict[str, Any] | None) -> ManifestTarget | BundleTarget | None:
    """The edgefleet custom field of an image-repository target; None when it has none.

    Raises:
        ValueError: present but malformed.
    """
    if not custom or CUSTOM_KEY not in custom:
        return None
    raw = custom[CUSTOM_KEY]
    try:
        if isinstance(raw, dict) and raw.get("kind") == "bundle":
            return BundleTarget.model_validate(raw)
        return ManifestTarget.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"malformed {CUSTOM_KEY} custom field: {exc.errors()[0].get('msg', 'invalid')}") from exc


def parse_director_custom(custom: dict[str, Any] | None) -> DirectorTarget:
    """The edgefleet custom field of a director target.

    Raises:
        ValueError: missing or malformed.
    """
    raw = (custom or {}).get(CUSTOM_KEY)
    try:
        return DirectorTarget.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"malformed director custom field: {exc.errors()[0].get('msg', 'invalid')}") from exc


def root_digest(root: bytes) -> str:
    """SHA-256 of a root's canonical signed content: the same however its JSON is laid out (hub or key directory).

    Raises:
        ValueError: not root metadata.
    """
    # python-tuf loads here, not with this module: an idle agent imports this module and never needs it.
    from securesystemslib.exceptions import FormatError
    from tuf.api.exceptions import RepositoryError
    from tuf.api.metadata import Metadata, Root

    try:
        metadata = Metadata[Root].from_bytes(root)
        signed = metadata.signed_bytes
    except (RepositoryError, FormatError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not root metadata: {str(exc)[:200]}") from exc
    if not isinstance(metadata.signed, Root):
        raise ValueError("not root metadata")
    return hashlib.sha256(signed).hexdigest()
