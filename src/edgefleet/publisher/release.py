"""Building a release directory from an app and signing its targets with the publisher's offline keys.

A build directory holds everything a push needs and nothing secret::

    BUILD/release.json      app, version, architectures, and target path -> local file
    BUILD/compose.yaml      the validated manifest, images pinned by digest
    BUILD/images/*.tar      OCI archives, when bundled
    BUILD/targets.json      the signed targets metadata (after `sign`)

The key directory keeps the last targets metadata it signed (``KEYS/repository/targets.json``);
each signature extends it with one release, so the repository's targets always list every
release, and the release counter of an app rises by one with every release it signs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.exceptions import FormatError, UnverifiedSignatureError, VerificationError
from securesystemslib.signer import Key
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, TargetFile, Targets

from edgefleet.crypto import write_public_file
from edgefleet.manifest import ManifestError, Release, parse_manifest
from edgefleet.publisher.errors import PublisherError
from edgefleet.publisher.keys import load_index, load_signers
from edgefleet.releases import CUSTOM_KEY, BundleTarget, ManifestTarget, bundle_path, manifest_path, parse_custom

TARGETS_LIFETIME = timedelta(days=365)
MANIFEST_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
STATE = Path("repository") / "targets.json"

Exporter = Callable[[str, Path], None]
"""(image pinned by digest, destination) -> writes the image as an OCI archive."""


class BuildError(PublisherError):
    """The app directory does not make a valid release."""


class SigningError(PublisherError):
    """The release cannot be signed (already signed, threshold not met, unusable state)."""


@dataclass(frozen=True)
class Build:
    """A build directory's description (release.json)."""

    directory: Path
    app: str
    version: str
    architectures: tuple[str, ...]
    files: dict[str, str]
    """Target path -> file name inside the build directory."""
    bundles: dict[str, str]
    """Target path -> image (name@sha256:...) of each bundled OCI archive."""

    @property
    def ref(self) -> str:
        return f"{self.app}@{self.version}"


def _find_manifest(app_dir: Path) -> Path:
    for name in MANIFEST_NAMES:
        if (app_dir / name).is_file():
            return app_dir / name
    raise BuildError(f"{app_dir}: no {' or '.join(MANIFEST_NAMES[:2])}")


def build(app_dir: Path, out: Path, *, exporter: Exporter | None = None) -> Build:
    """Validate the app's manifest and write a build directory (bundling images when `exporter` is given).

    Raises:
        BuildError: invalid manifest (every problem listed), no architectures, or `out` not empty.
    """
    source = _find_manifest(app_dir)
    raw = source.read_bytes()
    try:
        release = parse_manifest(raw, source=str(source))
    except ManifestError as exc:
        raise BuildError(str(exc)) from exc
    if not release.architectures:
        raise BuildError(
            f"{source}: x-edgefleet.architectures: required (the architectures every image of the release supports)"
        )
    if out.exists() and any(out.iterdir()):
        raise BuildError(f"{out} already exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    files = {manifest_path(release.app, release.version): "compose.yaml"}
    (out / "compose.yaml").write_bytes(raw)
    bundles: dict[str, str] = {}
    if exporter is not None:
        (out / "images").mkdir()
        for image in _images(release):
            target = bundle_path(release.app, release.version, image)
            name = f"images/{target.rsplit('/', 1)[-1]}"
            exporter(image, out / name)
            files[target] = name
            bundles[target] = image
    result = Build(out, release.app, release.version, release.architectures, files, bundles)
    description = {
        "app": result.app,
        "version": result.version,
        "architectures": list(result.architectures),
        "files": files,
        "bundles": bundles,
    }
    write_public_file(out / "release.json", json.dumps(description, indent=2, sort_keys=True).encode())
    return result


def _images(release: Release) -> list[str]:
    return sorted({service.compose.image for service in release.services})


def load_build(directory: Path) -> Build:
    """Read a build directory's release.json.

    Raises:
        BuildError: missing or malformed.
    """
    try:
        raw: dict[str, Any] = json.loads((directory / "release.json").read_text())
        return Build(
            directory=directory,
            app=str(raw["app"]),
            version=str(raw["version"]),
            architectures=tuple(str(a) for a in raw["architectures"]),
            files={str(k): str(v) for k, v in raw["files"].items()},
            bundles={str(k): str(v) for k, v in raw.get("bundles", {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BuildError(f"{directory} is not a build directory (edgefleet release build): {exc}") from exc


def _target_file(path: str, file: Path, custom: dict[str, Any]) -> TargetFile:
    digest = hashlib.sha256()
    length = 0
    with file.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
            length += len(chunk)
    return TargetFile(
        length=length, hashes={"sha256": digest.hexdigest()}, path=path, unrecognized_fields={"custom": custom}
    )


def load_state(keys_dir: Path) -> Metadata[Targets] | None:
    """The last targets metadata this key directory signed, if any.

    Raises:
        SigningError: present but unreadable.
    """
    path = keys_dir / STATE
    if not path.exists():
        return None
    try:
        return Metadata[Targets].from_bytes(path.read_bytes())
    except (OSError, ValueError, RepositoryError, FormatError) as exc:
        raise SigningError(f"{path} is unusable: {exc}") from exc


def next_counter(base: Targets | None, app: str) -> int:
    """One above the highest release counter of `app` in `base`."""
    highest = 0
    for target in base.targets.values() if base else ():
        try:
            info = parse_custom(target.custom)
        except ValueError:
            continue
        if isinstance(info, ManifestTarget) and info.app == app:
            highest = max(highest, info.release_counter)
    return highest + 1


def sign(
    build_dir: Path, keys_dir: Path, *, now: datetime, lifetime: timedelta = TARGETS_LIFETIME
) -> Metadata[Targets]:
    """Add the build's release to the key directory's targets, sign with its targets keys, write both copies.

    Raises:
        BuildError: not a build directory, or files changed since the build.
        SigningError: the release is already signed, or the threshold is not met.
        KeyStoreError: unusable keys.
    """
    release = load_build(build_dir)
    base = load_state(keys_dir)
    signed = Targets(version=1, expires=(now + lifetime).replace(microsecond=0))
    if base is not None:
        signed = base.signed
        signed.version += 1
        signed.expires = (now + lifetime).replace(microsecond=0)
    if manifest_path(release.app, release.version) in signed.targets:
        raise SigningError(f"{release.ref} is already signed; releases are immutable, bump the version")
    counter = next_counter(base.signed if base else None, release.app)
    for path, name in release.files.items():
        file = build_dir / name
        if not file.is_file():
            raise BuildError(f"{file} is missing; rebuild")
        if path in release.bundles:
            info: ManifestTarget | BundleTarget = BundleTarget(
                app=release.app, version=release.version, image=release.bundles[path]
            )
        else:
            info = ManifestTarget(
                app=release.app,
                version=release.version,
                release_counter=counter,
                architectures=release.architectures,
                bundles=tuple(release.bundles),
            )
        signed.targets[path] = _target_file(path, file, {CUSTOM_KEY: info.model_dump(mode="json")})
    metadata = Metadata(signed)
    index = load_index(keys_dir)["targets"]
    for signer in load_signers(keys_dir, "targets"):
        metadata.sign(signer, append=True)
    _check_threshold(metadata, index.threshold, {key.keyid: key for key in index.keys})
    body = json.dumps(metadata.to_dict(), indent=1, sort_keys=True).encode()
    write_public_file(build_dir / "targets.json", body)
    (keys_dir / STATE).parent.mkdir(mode=0o700, exist_ok=True)
    write_public_file(keys_dir / STATE, body)
    return metadata


def _check_threshold(metadata: Metadata[Targets], threshold: int, keys: dict[str, Key]) -> None:
    valid = 0
    for keyid, signature in metadata.signatures.items():
        key = keys.get(keyid)
        if key is None:
            continue
        try:
            key.verify_signature(signature, metadata.signed_bytes)
            valid += 1
        except (UnverifiedSignatureError, VerificationError):
            continue
    if valid < threshold:
        raise SigningError(f"targets signed by {valid} of the {threshold} keys needed; bring more targets keys")
