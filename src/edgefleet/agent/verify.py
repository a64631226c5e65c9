"""Uptane-style verification of a release before the agent uses any of it.

Two python-tuf `Updater`s, each with its own trusted root kept in the device's state dir:
the **director** (the hub's per-device assignment, signed with its online director key)
and the **image repository** (releases signed by the publisher's offline keys). A release
is accepted only when:

1. the director's targets name this device (and architecture), one target per app;
2. the image repository lists the same target with the same length and hashes, and the
   custom fields that must match (app, version, release counter; architecture supported).
   The target is found as TUF defines it: in the top-level targets or in a role they
   delegate its path to (a team's own keys for its app), searched preorder depth-first; the
   path must be the one the release's app and version give, so a role delegated one app's
   paths cannot pass off a release of another app;
3. its release counter is not below that of the last release the device installed for the
   app (kept even after the app was unassigned: `Journal.floor`), unless the director marks
   it as a rollback (and it is still a current target of the image repository: step 2);
4. every downloaded file (manifest, bundled images) matches its signed length and hash,
   and the manifest parses and names the same release.

A bundled image archive the device already holds (in a release it keeps) is not downloaded
again: a held file of the signed length is linked (or copied) into the staging directory and
used only if it then matches the signed hashes; otherwise it is downloaded.

Files are downloaded into a staging directory next to the install area and moved into
place only when everything verified; on any failure the staging directory is removed, so
nothing unverified is ever left where the agent would use it. Every failure raises
`UpdateRefusedError` with a stable reason.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.errors import HubUnreachableError, UpdateRefusedError
from edgefleet.agent.fetcher import HttpxFetcher
from edgefleet.agent.manifests import keep_document
from edgefleet.agent.truststore import DIRECTOR, REPOSITORY, TrustStore
from edgefleet.files import sync_dir
from edgefleet.manifest import ManifestError, Release, read_document, release_of
from edgefleet.protocol import API_PREFIX
from edgefleet.releases import (
    DEVICE_FIELD,
    MANIFEST_NAME,
    BundleTarget,
    DirectorTarget,
    ManifestTarget,
    bundle_path,
    manifest_path,
    parse_custom,
    parse_director_custom,
)


def updater_config(bounds: Bounds = DEFAULT_BOUNDS, *, max_delegations: int | None = None) -> UpdaterConfig:
    """The bounds every metadata download is held to (endless-data protection), from `bounds`.

    The image repository's targets may delegate (a team's own keys sign its app's paths):
    a target search walks them preorder depth-first, visiting the top-level targets and at most
    `Bounds.delegations` delegated roles.
    """
    return UpdaterConfig(
        max_root_rotations=bounds.root_rotations,
        max_delegations=bounds.delegations if max_delegations is None else max_delegations,
        root_max_length=bounds.root_bytes,
        timestamp_max_length=bounds.timestamp_bytes,
        snapshot_max_length=bounds.snapshot_bytes,
        targets_max_length=bounds.targets_bytes,
    )


def director_config(bounds: Bounds = DEFAULT_BOUNDS) -> UpdaterConfig:
    """The director's bounds: its targets never delegate (the agent refuses any that do), so nothing to walk."""
    return updater_config(bounds, max_delegations=0)


@contextmanager
def _refusals() -> Iterator[None]:
    """python-tuf's exceptions, converted at this boundary into reasons the agent reports."""
    try:
        yield
    except tuf_errors.ExpiredMetadataError as exc:
        raise UpdateRefusedError("expired", str(exc)) from exc
    except tuf_errors.BadVersionNumberError as exc:
        raise UpdateRefusedError("rollback_attack", str(exc)) from exc
    except tuf_errors.UnsignedMetadataError as exc:
        raise UpdateRefusedError("signature", str(exc)) from exc
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise UpdateRefusedError("hash_mismatch", str(exc)) from exc
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise UpdateRefusedError("too_large", str(exc)) from exc
    except tuf_errors.DownloadHTTPError as exc:
        if exc.status_code in (401, 403, 404):
            raise UpdateRefusedError("not_in_repository", str(exc)) from exc
        raise HubUnreachableError(str(exc)) from exc
    except tuf_errors.DownloadError as exc:
        raise HubUnreachableError(str(exc)) from exc
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as exc:
        raise UpdateRefusedError("metadata", str(exc)[:300]) from exc


def trust_root(directory: Path, root: bytes) -> None:
    """Check `root` and keep it as the trusted root in `directory` (constructing an ngclient Updater does both).

    Raises:
        UpdateRefusedError: not valid root metadata.
    """
    with _refusals():
        Updater(str(directory), "https://unused.invalid/", bootstrap=root)


@dataclass(frozen=True)
class Assigned:
    """One app's verified assignment: the director's target and its custom fields."""

    target: TargetFile
    custom: DirectorTarget


@dataclass(frozen=True)
class VerifiedRelease:
    """A release whose every file verified, installed at `directory`."""

    app: str
    version: str
    release_counter: int
    rollback: bool
    manifest: Release
    directory: Path
    """Holds compose.yaml and, when bundled, images/*.tar."""


class ReleaseVerifier:
    """Verifies assignments and releases for one device; make a new one per update cycle (ngclient rule)."""

    def __init__(
        self,
        *,
        hub_url: str,
        trust: TrustStore,
        fetcher: FetcherInterface,
        device_id: str,
        arch: str,
        bounds: Bounds = DEFAULT_BOUNDS,
    ) -> None:
        base = hub_url.rstrip("/") + API_PREFIX + "/tuf"
        self._trust = trust
        self._device_id = device_id
        self._arch = arch
        self._fetcher = fetcher
        self._director_url = f"{base}/{DIRECTOR}/"
        self._config = updater_config(bounds)
        self._director_config = director_config(bounds)
        with _refusals():
            self._image = Updater(
                str(trust.metadata_dir(REPOSITORY)),
                f"{base}/{REPOSITORY}/",
                target_base_url=f"{base}/{REPOSITORY}/targets/",
                fetcher=fetcher,
                config=self._config,
                bootstrap=None,
            )
        self._assigned: dict[str, Assigned] | None = None

    def assignments(self) -> dict[str, Assigned]:
        """Refresh the director and return this device's assignment per app.

        The director's metadata is refreshed in a copy of the trusted set and becomes trusted
        only once everything about it checked out (python-tuf's checks, then ours: this
        device's ID, no delegations, one well-formed target per app). Metadata for another
        device, even validly signed at a higher version, is never kept, so a replay cannot
        jam the device against its own later versions.

        Raises:
            UpdateRefusedError: the director's metadata does not verify or is not for this device.
        """
        if self._assigned is not None:
            return self._assigned
        with self._trust.staged(DIRECTOR) as staging:
            with _refusals():
                director = Updater(
                    str(staging),
                    self._director_url,
                    fetcher=self._fetcher,
                    config=self._director_config,
                    bootstrap=None,
                )
                director.refresh()
                # ngclient keeps the metadata it just verified under its unversioned name.
                targets = Metadata[Targets].from_bytes((staging / "targets.json").read_bytes()).signed
            assigned = self._checked(targets)
            self._trust.keep(DIRECTOR, staging)
        self._assigned = assigned
        return assigned

    def _checked(self, targets: Targets) -> dict[str, Assigned]:
        """The device's assignment per app in the director's verified targets, or why they are not its own."""
        if targets.unrecognized_fields.get(DEVICE_FIELD) != self._device_id:
            raise UpdateRefusedError("wrong_device", "the director's targets are for another device")
        if targets.delegations is not None:
            raise UpdateRefusedError("metadata", "the director's targets must not delegate")
        assigned: dict[str, Assigned] = {}
        for target in targets.targets.values():
            try:
                custom = parse_director_custom(target.custom)
            except ValueError as exc:
                raise UpdateRefusedError("metadata", f"{target.path}: {exc}") from exc
            if custom.device_id != self._device_id or custom.arch != self._arch:
                raise UpdateRefusedError("wrong_device", f"{target.path} is for {custom.device_id}/{custom.arch}")
            if custom.app in assigned:
                raise UpdateRefusedError("metadata", f"the director lists {custom.app} twice")
            assigned[custom.app] = Assigned(target=target, custom=custom)
        return assigned

    def _image_target(self, path: str) -> TargetFile:
        with _refusals():
            info = self._image.get_targetinfo(path)
        if info is None:
            raise UpdateRefusedError("not_in_repository", f"{path} is not a target of the image repository")
        return info

    def _match(self, assigned: Assigned) -> tuple[TargetFile, ManifestTarget]:
        """The image repository's target for the director's, when they agree on everything that matters."""
        director, custom = assigned.target, assigned.custom
        image = self._image_target(director.path)
        try:
            info = parse_custom(image.custom)
        except ValueError as exc:
            raise UpdateRefusedError("metadata", f"{image.path}: {exc}") from exc
        if not isinstance(info, ManifestTarget):
            raise UpdateRefusedError("mix_and_match", f"{image.path} is not a release manifest")
        if image.path != manifest_path(info.app, info.version):
            # The path decides which role may sign it: another app's release under this path is forged.
            raise UpdateRefusedError("mix_and_match", f"{image.path} names {info.app}@{info.version}")
        if director.length != image.length or director.hashes != image.hashes:
            raise UpdateRefusedError("mix_and_match", f"{image.path}: director and image repository name other bytes")
        if (info.app, info.version, info.release_counter) != (custom.app, custom.version, custom.release_counter):
            raise UpdateRefusedError("mix_and_match", f"{image.path}: director and image repository disagree")
        if custom.arch not in info.architectures:
            raise UpdateRefusedError("wrong_device", f"{info.app}@{info.version} has no images for {custom.arch}")
        return image, info

    def verify(
        self, app: str, *, installed_counter: int | None, install_dir: Path, held: Iterable[Path] = ()
    ) -> VerifiedRelease:
        """Verify and download the release assigned to `app` into `install_dir` (which must not exist).

        `installed_counter` is the app's release floor: the counter of the last release installed
        for it, even if it has been unassigned since (None: never installed here). `held` are
        bundle archives the device keeps: one with a bundle's signed length and hashes is used
        instead of a download.

        Raises:
            UpdateRefusedError: any check failed; nothing is left at `install_dir`.
            HubUnreachableError: a download failed for network reasons; retry later.
        """
        assigned = self.assignments().get(app)
        if assigned is None:
            raise UpdateRefusedError("no_assignment", f"nothing is assigned to {app} on this device")
        image, info = self._match(assigned)
        if installed_counter is not None and info.release_counter < installed_counter and not assigned.custom.rollback:
            raise UpdateRefusedError(
                "release_rollback",
                f"{app}@{info.version} (counter {info.release_counter}) is older than the last release installed "
                f"here (counter {installed_counter}) and the director did not mark it as a rollback",
            )
        if install_dir.exists():
            raise FileExistsError(str(install_dir))
        install_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = install_dir.parent / f".staging-{install_dir.name}-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        try:
            manifest = self._download(image, info, staging, held=tuple(held))
            _sync_tree(staging)  # durable before it is named: power loss must not leave a torn release
            os.replace(staging, install_dir)
            sync_dir(install_dir.parent)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, UpdateRefusedError) and isinstance(self._fetcher, HttpxFetcher):
                self._fetcher.discard_unfinished()  # bytes refused now are not kept for a later attempt
            raise
        return VerifiedRelease(
            app=info.app,
            version=info.version,
            release_counter=info.release_counter,
            rollback=assigned.custom.rollback,
            manifest=manifest,
            directory=install_dir,
        )

    def _download(self, image: TargetFile, info: ManifestTarget, staging: Path, *, held: tuple[Path, ...]) -> Release:
        with _refusals():
            self._image.download_target(image, filepath=str(staging / MANIFEST_NAME))
        try:
            document = read_document((staging / MANIFEST_NAME).read_bytes(), source=image.path)
            manifest = release_of(document, source=image.path)
        except ManifestError as exc:
            raise UpdateRefusedError("bad_manifest", str(exc)[:300]) from exc
        if (manifest.app, manifest.version) != (info.app, info.version):
            raise UpdateRefusedError("bad_manifest", f"{image.path} describes {manifest.ref}")
        keep_document(staging, document)  # read at rest instead of the YAML (agent.manifests)
        for path in info.bundles:
            bundle = self._image_target(path)
            try:
                custom = parse_custom(bundle.custom)
            except ValueError as exc:
                raise UpdateRefusedError("metadata", f"{path}: {exc}") from exc
            if (
                not isinstance(custom, BundleTarget)
                or (custom.app, custom.version) != (info.app, info.version)
                or path != bundle_path(info.app, info.version, custom.image)
            ):
                raise UpdateRefusedError("mix_and_match", f"{path} is not a bundle of {info.app}@{info.version}")
            (staging / "images").mkdir(exist_ok=True)
            destination = staging / "images" / path.rsplit("/", 1)[-1]
            if not self._reuse(bundle, held, destination):
                with _refusals():
                    self._image.download_target(bundle, filepath=str(destination))
        return manifest

    def _reuse(self, bundle: TargetFile, held: tuple[Path, ...], destination: Path) -> bool:
        """Put a held file with `bundle`'s signed length and hashes at `destination`; whether one was found.

        The file is checked where it lands (a link or a copy in the staging directory), so what
        is used is exactly what matched.
        """
        for candidate in held:
            try:
                if candidate.stat().st_size != bundle.length:
                    continue
                _link_or_copy(candidate, destination)
            except OSError:
                continue
            if self._image.find_cached_target(bundle, str(destination)) is not None:
                return True
            destination.unlink(missing_ok=True)
        return False


def _link_or_copy(source: Path, destination: Path) -> None:
    """A hard link (no second copy on the device's storage), or a copy where linking is not possible."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)


def _sync_tree(root: Path) -> None:
    """Fsync every file and directory below `root`."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            sync_dir(path)
    sync_dir(root)
