"""Publishing releases: artifact uploads and publisher-signed targets metadata, checked before they are served.

A targets push is accepted only when it verifies against the current trusted root (the
publisher's targets threshold), is newer than the current targets, and every target it lists
is an artifact the hub holds with exactly the signed length and SHA-256. Manifests are
parsed again here; release facts (counter, architectures) are taken from the signed custom
fields. Published releases are immutable: the same APP@VERSION can never change content.

The top-level targets may delegate paths to named roles (`hub.delegation` bounds what they
may say). A delegated role's targets are checked the same way, but against the keys,
threshold and path patterns the current top-level targets give that role: a role that is
not delegated (any more) is refused, and so is any target outside its patterns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from securesystemslib.exceptions import FormatError
from tuf.api.exceptions import RepositoryError, UnsignedMetadataError
from tuf.api.metadata import Metadata, TargetFile, Targets

from edgefleet.hub import delegation, signing
from edgefleet.hub.artifacts import ArtifactStore, Upload
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from edgefleet.hub.records import ReleaseRecord
from edgefleet.hub.services import metadata as repo_metadata
from edgefleet.hub.services.audit import record
from edgefleet.hub.services.operators import Operator, authorize, operator_action
from edgefleet.manifest import ManifestError, parse_manifest
from edgefleet.releases import (
    TARGET_PATH,
    BundleTarget,
    ManifestTarget,
    bundle_path,
    manifest_path,
    parse_custom,
    role_name_problem,
)

MAX_TARGETS = 10_000
MAX_TARGETS_VERSION = 1_000_000_000
MAX_ROLES_EVER = 64
"""Delegated roles the repository may ever hold: a snapshot lists each one for good (TUF forbids dropping one)."""


@dataclass(frozen=True, slots=True)
class TargetsAccepted:
    version: int
    releases: tuple[str, ...]
    """APP@VERSION of each release this push added."""
    role: str = "targets"


@dataclass(frozen=True, slots=True)
class ListedRelease:
    """A published release, and whether a TUF client finds it in the image repository now."""

    release: ReleaseRecord
    current: bool


def begin_upload(hub: Hub, operator: Operator, sha256: str) -> Upload:
    """Start receiving an artifact (operator); the caller streams chunks into it and calls `finish`."""
    authorize(operator, "operator", action="repository.artifact")
    return ArtifactStore(hub.settings.artifacts_path()).begin(sha256, max_bytes=hub.settings.max_artifact_bytes)


def _parse(body: dict[str, Any]) -> tuple[Metadata[Targets], bytes]:
    try:
        metadata = Metadata[Targets].from_dict(json.loads(json.dumps(body)))
        if not isinstance(metadata.signed, Targets):
            raise BadRequestError("invalid_metadata", "expected targets metadata")
        return metadata, metadata.signed_bytes
    except (ValueError, KeyError, TypeError, AttributeError, FormatError, RepositoryError) as exc:
        raise BadRequestError("invalid_metadata", f"not TUF targets metadata: {str(exc)[:200]}") from exc


def _artifact_problem(store: ArtifactStore, target: TargetFile) -> str | None:
    digest = target.hashes.get("sha256")
    if not isinstance(digest, str) or set(target.hashes) != {"sha256"}:
        return "must carry exactly one hash, sha256"
    try:
        size = store.size(digest)
    except BadRequestError:
        return "sha256 is not 64 lowercase hex characters"
    if size is None:
        return f"artifact sha256:{digest} was not uploaded"
    if size != target.length:
        return f"signed length {target.length} but the artifact has {size} bytes"
    return None


def _digest(target: TargetFile | None) -> str | None:
    return None if target is None else target.hashes.get("sha256")  # a missing one never equals a stored digest


def _release_of(
    store: ArtifactStore, path: str, target: TargetFile, info: ManifestTarget, targets: dict[str, TargetFile]
) -> tuple[list[str], list[str]]:
    """(problems, artifact digests) of one manifest target and its bundles."""
    problems: list[str] = []
    if path != manifest_path(info.app, info.version):
        problems.append(
            f"{path}: a manifest of {info.app}@{info.version} must be at {manifest_path(info.app, info.version)}"
        )
    digests = [target.hashes["sha256"]]
    try:
        release = parse_manifest(store.path(digests[0]).read_bytes(), source=path)
        if (release.app, release.version) != (info.app, info.version):
            problems.append(f"{path}: the manifest is {release.ref}, the signed fields say {info.app}@{info.version}")
    except ManifestError as exc:
        problems.append(str(exc)[:300])
    for bundle in info.bundles:
        entry = targets.get(bundle)
        try:
            custom = parse_custom(entry.custom) if entry is not None else None
        except ValueError:
            custom = None  # reported below, and as its own target's problem
        if entry is None or not isinstance(custom, BundleTarget):
            problems.append(f"{path}: bundle {bundle} is not a bundle target of this metadata")
        elif (custom.app, custom.version) != (info.app, info.version) or bundle != bundle_path(
            info.app, info.version, custom.image
        ):
            problems.append(f"{bundle}: belongs to {custom.app}@{custom.version}, not {info.app}@{info.version}")
        elif "sha256" not in entry.hashes:
            problems.append(f"{bundle}: must carry a sha256 hash")
        else:
            digests.append(entry.hashes["sha256"])
    return problems, digests


def _check_targets(
    hub: Hub, tx: Tx, signed: Targets, signer_keyids: tuple[str, ...], *, role: str
) -> list[ReleaseRecord]:
    """Every problem with the listed targets (as one 409), else the releases this version adds."""
    store = ArtifactStore(hub.settings.artifacts_path())
    problems: list[str] = []
    added: list[ReleaseRecord] = []
    counters: dict[str, int] = {}
    for path, target in signed.targets.items():
        problem = _artifact_problem(store, target) if TARGET_PATH.fullmatch(path) else "not a valid target path"
        if problem is not None:
            problems.append(f"{path}: {problem}")
            continue
        try:
            info = parse_custom(target.custom)
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
            continue
        if not isinstance(info, ManifestTarget):
            continue
        existing = tx.get_release(info.app, info.version)
        if existing is not None:
            # Checked when first published; it may only stay exactly as it was, bundles included.
            artifacts = (target.hashes["sha256"], *(_digest(signed.targets.get(b)) for b in info.bundles))
            if existing.artifacts != artifacts or existing.release_counter != info.release_counter:
                problems.append(f"{path}: {info.app}@{info.version} was published with other content; bump the version")
            continue
        release_problems, digests = _release_of(store, path, target, info, signed.targets)
        problems.extend(release_problems)
        floor = counters.get(info.app, tx.max_release_counter(info.app))
        if info.release_counter <= floor:
            problems.append(f"{path}: release_counter {info.release_counter} must be above {floor} for {info.app}")
        counters[info.app] = max(floor, info.release_counter)
        added.append(
            ReleaseRecord(
                app=info.app,
                version=info.version,
                release_counter=info.release_counter,
                architectures=info.architectures,
                manifest_path=path,
                manifest_length=target.length,
                manifest_sha256=digests[0],
                artifacts=tuple(digests),
                signer_keyids=signer_keyids,
                targets_version=signed.version,
                created_at=hub.clock(),
                role=role,
            )
        )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ConflictError("targets_rejected", shown[:1500])
    return added


def _check_fresh(hub: Hub, what: str, signed: Targets, floor: int) -> None:
    if not floor < signed.version <= MAX_TARGETS_VERSION:
        raise ConflictError("wrong_version", f"{what} version must be above {floor}, got {signed.version}")
    if signed.is_expired(hub.clock()):
        raise ConflictError("expired", f"{what} metadata has already expired")


def _check_role_count(tx: Tx, signed: Targets) -> None:
    """The roles stored so far and those now delegated must stay within what a snapshot may list."""
    roles = set(repo_metadata.delegated_versions(tx)) | set(delegation.delegated_roles(signed))
    if len(roles) > MAX_ROLES_EVER:
        raise ConflictError(
            "too_many_roles", f"this repository may hold at most {MAX_ROLES_EVER} delegated roles, ever"
        )


def push_targets(hub: Hub, operator: Operator, body: dict[str, Any]) -> TargetsAccepted:
    """Accept a new publisher-signed targets version, then sign snapshot and timestamp for it.

    Raises:
        BadRequestError: not targets metadata, delegations the hub does not serve, too many targets.
        ForbiddenError: fewer valid signatures than the trusted root's targets threshold.
        ConflictError: no root yet, not newer, expired, too many roles, or a target that does not check out.
    """
    with operator_action(hub, operator, "operator", action="repository.targets", target="repository:targets") as tx:
        metadata, signed_bytes = _parse(body)
        signed = metadata.signed
        delegation.check_delegations(signed)
        if len(signed.targets) > MAX_TARGETS:
            raise BadRequestError("too_many_targets", f"at most {MAX_TARGETS} targets")
        tx.lock_repository()
        root_row = tx.latest_metadata("root")
        if root_row is None:
            raise ConflictError("no_root", "the repository has no root yet: run `edgefleet repo init`")
        root = signing.parse_stored(root_row[1]).signed
        current = tx.latest_metadata("targets")
        _check_fresh(hub, "targets", signed, 0 if current is None else current[0])
        try:
            root.verify_delegate(Targets.type, signed_bytes, metadata.signatures)
        except (UnsignedMetadataError, ValueError, TypeError, KeyError, FormatError) as exc:
            raise ForbiddenError("signature_threshold", f"targets signatures: {exc}") from exc
        _check_role_count(tx, signed)
        trusted = set(root.roles[Targets.type].keyids)
        signer_keyids = tuple(sorted(keyid for keyid in metadata.signatures if keyid in trusted))
        added = _check_targets(hub, tx, signed, signer_keyids, role=Targets.type)
        stored = signing.to_text(metadata)
        tx.insert_metadata("targets", signed.version, stored, now=hub.clock())
        for release in added:
            tx.insert_release(release)
        repo_metadata.publish(hub, tx, signed.version)
        refs = tuple(f"{r.app}@{r.version}" for r in added)
        before = set() if current is None else set(delegation.delegated_roles(signing.parse_stored(current[1]).signed))
        now_delegated = set(delegation.delegated_roles(signed))
        record(
            hub,
            tx,
            actor=operator.actor,
            action="repository.targets",
            target=f"repository:targets:{signed.version}",
            detail={
                "releases": list(refs[:32]),
                "signers": list(signer_keyids[:16]),
                "targets": len(signed.targets),
                "delegated": sorted(now_delegated - before),
                "revoked": sorted(before - now_delegated),
            },
        )
    return TargetsAccepted(version=signed.version, releases=refs)


def push_delegated_targets(hub: Hub, operator: Operator, role: str, body: dict[str, Any]) -> TargetsAccepted:
    """Accept a new version of a delegated role's targets, then sign snapshot and timestamp for it.

    Raises:
        BadRequestError: not a delegated role's name, not targets metadata, delegations, too many targets.
        ForbiddenError: the current top-level targets do not delegate to `role`, fewer valid
            signatures than its threshold, or a target outside its path patterns.
        ConflictError: no root or targets yet, not newer, expired, or a target that does not check out.
    """
    problem = role_name_problem(role)
    target = f"repository:delegated:{role if problem is None else '?'}"
    with operator_action(hub, operator, "operator", action="repository.delegated_targets", target=target) as tx:
        if problem is not None:
            raise BadRequestError("invalid_role", f"{role[:40]!r}: {problem}")
        metadata, signed_bytes = _parse(body)
        signed = metadata.signed
        if signed.delegations is not None:
            raise BadRequestError("delegations_unsupported", "a delegated role may not delegate further")
        if len(signed.targets) > MAX_TARGETS:
            raise BadRequestError("too_many_targets", f"at most {MAX_TARGETS} targets")
        tx.lock_repository()
        if tx.latest_metadata("root") is None:
            raise ConflictError("no_root", "the repository has no root yet: run `edgefleet repo init`")
        top_row = tx.latest_metadata("targets")
        top = None if top_row is None else signing.parse_stored(top_row[1]).signed
        delegated = None if top is None else delegation.delegated_roles(top).get(role)
        if top_row is None or top is None or delegated is None:
            raise ForbiddenError(
                "not_delegated", f"the top-level targets do not delegate to {role} (never, or no longer)"
            )
        current = tx.latest_metadata(role)
        _check_fresh(hub, role, signed, 0 if current is None else current[0])
        try:
            top.verify_delegate(role, signed_bytes, metadata.signatures)
        except (UnsignedMetadataError, ValueError, TypeError, KeyError, FormatError) as exc:
            raise ForbiddenError("signature_threshold", f"{role} signatures: {exc}") from exc
        outside = [path for path in signed.targets if not delegated.is_delegated_path(path)]
        if outside:
            shown = ", ".join(path[:128] for path in outside[:5])
            raise ForbiddenError("path_not_delegated", f"{role} is not delegated {shown}"[:1500])
        signer_keyids = tuple(sorted(keyid for keyid in metadata.signatures if keyid in delegated.keyids))
        added = _check_targets(hub, tx, signed, signer_keyids, role=role)
        tx.insert_metadata(role, signed.version, signing.to_text(metadata), now=hub.clock())
        for release in added:
            tx.insert_release(release)
        repo_metadata.publish(hub, tx, top_row[0])
        refs = tuple(f"{r.app}@{r.version}" for r in added)
        record(
            hub,
            tx,
            actor=operator.actor,
            action="repository.delegated_targets",
            target=f"repository:{role}:{signed.version}",
            detail={"releases": list(refs[:32]), "signers": list(signer_keyids[:16]), "targets": len(signed.targets)},
        )
    return TargetsAccepted(version=signed.version, releases=refs, role=role)


def latest_delegated_targets(hub: Hub, operator: Operator, role: str) -> dict[str, Any]:
    """A delegated role's newest targets metadata, exactly as signed (viewer)."""
    authorize(operator, "viewer", action="repository.delegated_targets.get")
    if role_name_problem(role) is not None:
        raise NotFoundError("metadata_not_found", "no such role")
    with hub.store.transaction(readonly=True) as tx:
        latest = tx.latest_metadata(role)
    if latest is None:
        raise NotFoundError("metadata_not_found", f"no targets of {role} in this repository")
    parsed: dict[str, Any] = json.loads(latest[1])
    return parsed


def list_releases(hub: Hub, operator: Operator, *, app: str | None, limit: int) -> list[ListedRelease]:
    """Published releases, newest first per app, each with whether it is still a target (viewer)."""
    authorize(operator, "viewer", action="release.list")
    with hub.store.transaction(readonly=True) as tx:
        found = tx.list_releases(app=app, limit=limit)
        current = repo_metadata.target_roles(tx, (release.manifest_path for release in found))
    return [ListedRelease(release=release, current=release.manifest_path in current) for release in found]
