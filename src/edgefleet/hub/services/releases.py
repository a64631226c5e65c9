"""Publishing releases: artifact uploads and publisher-signed targets metadata, checked before they are served.

A targets push is accepted only when it verifies against the current trusted root (the
publisher's targets threshold), is newer than the current targets, and every target it lists
is an artifact the hub holds with exactly the signed length and SHA-256. Manifests are
parsed again here; release facts (counter, architectures) are taken from the signed custom
fields. Published releases are immutable: the same APP@VERSION can never change content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from securesystemslib.exceptions import FormatError
from tuf.api.exceptions import RepositoryError, UnsignedMetadataError
from tuf.api.metadata import Metadata, TargetFile, Targets

from edgefleet.hub import signing
from edgefleet.hub.artifacts import ArtifactStore, Upload
from edgefleet.hub.context import Hub
from edgefleet.hub.db import Tx
from edgefleet.hub.errors import BadRequestError, ConflictError, ForbiddenError
from edgefleet.hub.records import ReleaseRecord
from edgefleet.hub.services import metadata as repo_metadata
from edgefleet.hub.services.audit import record
from edgefleet.hub.services.operators import Operator, authorize, operator_action
from edgefleet.manifest import ManifestError, parse_manifest
from edgefleet.releases import TARGET_PATH, BundleTarget, ManifestTarget, bundle_path, manifest_path, parse_custom

MAX_TARGETS = 10_000
MAX_TARGETS_VERSION = 1_000_000_000


@dataclass(frozen=True, slots=True)
class TargetsAccepted:
    version: int
    releases: tuple[str, ...]
    """APP@VERSION of each release this push added."""


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


def _check_targets(hub: Hub, tx: Tx, signed: Targets, signer_keyids: tuple[str, ...]) -> list[ReleaseRecord]:
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
            )
        )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ConflictError("targets_rejected", shown[:1500])
    return added


def push_targets(hub: Hub, operator: Operator, body: dict[str, Any]) -> TargetsAccepted:
    """Accept a new publisher-signed targets version, then sign snapshot and timestamp for it.

    Raises:
        BadRequestError: not targets metadata, delegations, too many targets.
        ForbiddenError: fewer valid signatures than the trusted root's targets threshold.
        ConflictError: no root yet, not newer, expired, or a target that does not check out.
    """
    with operator_action(hub, operator, "operator", action="repository.targets", target="repository:targets") as tx:
        metadata, signed_bytes = _parse(body)
        signed = metadata.signed
        if signed.delegations is not None:
            raise BadRequestError("delegations_unsupported", "targets delegations are not supported")
        if len(signed.targets) > MAX_TARGETS:
            raise BadRequestError("too_many_targets", f"at most {MAX_TARGETS} targets")
        tx.lock_repository()
        root_row = tx.latest_metadata("root")
        if root_row is None:
            raise ConflictError("no_root", "the repository has no root yet: run `edgefleet repo init`")
        root = signing.parse_stored(root_row[1]).signed
        current = tx.latest_metadata("targets")
        floor = 0 if current is None else current[0]
        if not floor < signed.version <= MAX_TARGETS_VERSION:
            raise ConflictError("wrong_version", f"targets version must be above {floor}, got {signed.version}")
        if signed.is_expired(hub.clock()):
            raise ConflictError("expired", "targets metadata has already expired")
        try:
            root.verify_delegate(Targets.type, signed_bytes, metadata.signatures)
        except (UnsignedMetadataError, ValueError, TypeError, KeyError, FormatError) as exc:
            raise ForbiddenError("signature_threshold", f"targets signatures: {exc}") from exc
        trusted = set(root.roles[Targets.type].keyids)
        signer_keyids = tuple(sorted(keyid for keyid in metadata.signatures if keyid in trusted))
        added = _check_targets(hub, tx, signed, signer_keyids)
        stored = signing.to_text(metadata)
        tx.insert_metadata("targets", signed.version, stored, now=hub.clock())
        for release in added:
            tx.insert_release(release)
        repo_metadata.publish(hub, tx, signed.version)
        refs = tuple(f"{r.app}@{r.version}" for r in added)
        record(
            hub,
            tx,
            actor=operator.actor,
            action="repository.targets",
            target=f"repository:targets:{signed.version}",
            detail={"releases": list(refs[:32]), "signers": list(signer_keyids[:16]), "targets": len(signed.targets)},
        )
    return TargetsAccepted(version=signed.version, releases=refs)


def list_releases(hub: Hub, operator: Operator, *, app: str | None, limit: int) -> list[ReleaseRecord]:
    """Published releases, newest first per app (viewer)."""
    authorize(operator, "viewer", action="release.list")
    with hub.store.transaction(readonly=True) as tx:
        return tx.list_releases(app=app, limit=limit)
