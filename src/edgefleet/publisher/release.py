"""Building a release directory from an app and signing its targets with the publisher's offline keys.

A build directory holds everything a push needs and nothing secret::

    BUILD/release.json      app, version, architectures, and target path -> local file
    BUILD/compose.yaml      the validated manifest, images pinned by digest
    BUILD/images/*.tar      OCI archives, when bundled
    BUILD/targets.json      the signed targets metadata (after `sign` with the targets keys)
    BUILD/delegated/ROLE.json   or, signed with a team's key directory, its delegated role's

The key directory keeps the last targets metadata it signed (``KEYS/repository/targets.json``,
or ``KEYS/repository/ROLE.json`` for a team's delegated role); each signature extends it with
one release, so the role's targets always list every release it signed, and the release
counter of an app rises by one with every release it signs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from tuf.api.metadata import Metadata, TargetFile, Targets

from edgefleet.crypto import write_public_file
from edgefleet.manifest import MAX_MANIFEST_BYTES, ManifestError, Release, parse_manifest
from edgefleet.publisher.errors import PublisherError
from edgefleet.publisher.registry import ARCHITECTURES, Resolved
from edgefleet.publisher.state import TARGETS_LIFETIME, load_targets, sign_targets, signing_role
from edgefleet.releases import (
    CUSTOM_KEY,
    MAX_RELEASE_COUNTER,
    BundleTarget,
    ManifestTarget,
    bundle_path,
    manifest_path,
    parse_custom,
    role_name_problem,
)

MANIFEST_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
SIGNED_TARGETS = "targets.json"
SIGNED_DELEGATED = "delegated"

Exporter = Callable[[str, Path], None]
"""(image pinned by digest, destination) -> writes the image as an OCI archive."""
Resolver = Callable[[str], Resolved]
"""Image reference as written -> the image pinned by digest and the architectures it has."""
_YAML_STR = "tag:yaml.org,2002:str"


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


def build(app_dir: Path, out: Path, *, exporter: Exporter | None = None, resolver: Resolver | None = None) -> Build:
    """Validate the app's manifest and write a build directory (bundling images when `exporter` is given).

    Without `resolver`, every image must be pinned by digest and the manifest must list
    its architectures. With `resolver` (`RegistryClient.resolve`), images may be given by
    tag: each is resolved and rewritten as ``name@sha256:...`` in the written compose.yaml.
    Every resolved image must then have each architecture the manifest lists; when it lists
    none, the release's architectures are those all its images have (images already pinned
    are looked up for this; with architectures listed they are taken as written).

    Raises:
        BuildError: invalid manifest (every problem listed), no architectures, an image without
            one of them, or `out` not empty.
        RegistryError: from `resolver` or `exporter`: an image cannot be resolved or exported.
    """
    source = _find_manifest(app_dir)
    raw = source.read_bytes()
    looked_up: dict[str, tuple[str, Resolved]] = {}
    if resolver is not None:
        raw, looked_up = _pin_tags(raw, resolver)
    try:
        release = parse_manifest(raw, source=str(source))
    except ManifestError as exc:
        raise BuildError(str(exc)) from exc
    if resolver is None:
        if not release.architectures:
            raise BuildError(
                f"{source}: x-edgefleet.architectures: required (the architectures every image of the release supports)"
            )
        architectures = release.architectures
    else:
        if not release.architectures:
            for image in _images(release):
                if image not in looked_up:
                    looked_up[image] = (image, resolver(image))
        architectures = _check_architectures(source, release.architectures, looked_up.values())
    if out.exists() and any(out.iterdir()):
        raise BuildError(f"{out} already exists and is not empty")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = _write_build(out, raw, release, architectures, exporter)
    except BaseException:
        # A half-written build (say, an export that failed) must not look like a build.
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise
    return result


def _write_build(
    out: Path, raw: bytes, release: Release, architectures: tuple[str, ...], exporter: Exporter | None
) -> Build:
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
    result = Build(out, release.app, release.version, architectures, files, bundles)
    description = {
        "app": result.app,
        "version": result.version,
        "architectures": list(result.architectures),
        "files": files,
        "bundles": bundles,
    }
    write_public_file(out / "release.json", json.dumps(description, indent=2, sort_keys=True).encode())
    return result


def _image_nodes(root: yaml.Node | None) -> Iterator[yaml.ScalarNode]:
    """The string scalars under services.*.image of a composed (not constructed) YAML document."""
    if not isinstance(root, yaml.MappingNode):
        return
    for key, services in root.value:
        if key.value != "services" or not isinstance(services, yaml.MappingNode):
            continue
        for _, service in services.value:
            if not isinstance(service, yaml.MappingNode):
                continue
            for field, value in service.value:
                if field.value == "image" and isinstance(value, yaml.ScalarNode) and value.tag == _YAML_STR:
                    yield value


def _pin_tags(raw: bytes, resolver: Resolver) -> tuple[bytes, dict[str, tuple[str, Resolved]]]:
    """Resolve every image given by tag and rewrite it in place as name@sha256:..., keeping the file's comments.

    Returns the new text and, for each image as now written, (image as it was written, what the resolver said).
    Anything unparsable is returned unchanged for `parse_manifest` to report.
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        return raw, {}
    try:
        text = raw.decode()
        # Composing builds the node graph without constructing values (aliases stay shared nodes).
        nodes = list(_image_nodes(yaml.compose(text, Loader=yaml.SafeLoader)))
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return raw, {}
    resolved: dict[str, tuple[str, Resolved]] = {}
    by_written: dict[str, Resolved] = {}
    edits: list[tuple[int, int, str]] = []
    for node in nodes:
        written = str(node.value)
        if "@" in written:
            continue  # pinned by digest already: kept as written
        if written not in by_written:
            by_written[written] = resolver(written)
        info = by_written[written]
        resolved[info.image] = (written, info)
        # A double-quoted scalar is valid in block and flow context alike.
        edits.append((node.start_mark.index, node.end_mark.index, json.dumps(info.image)))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text.encode(), resolved


def _check_architectures(
    source: Path, declared: tuple[str, ...] | None, images: Iterable[tuple[str, Resolved]]
) -> tuple[str, ...]:
    """The release's architectures: the declared ones, each present in every image; else what all images share."""
    checked = sorted(images, key=lambda item: item[0])
    if declared:
        for written, info in checked:
            missing = [arch for arch in declared if arch not in info.architectures]
            if missing:
                raise BuildError(
                    f"{source}: image {written} has no {', '.join(missing)} variant "
                    f"(it has {', '.join(info.architectures) or 'no known architecture'}); "
                    "remove it from x-edgefleet.architectures or publish the image for it"
                )
        return declared
    common = tuple(arch for arch in ARCHITECTURES if all(arch in info.architectures for _, info in checked))
    if not common:
        found = "; ".join(f"{written}: {', '.join(info.architectures) or 'none known'}" for written, info in checked)
        raise BuildError(f"{source}: the images have no architecture in common ({found})")
    return common


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


def delegated_to(targets: Targets, path: str) -> str | None:
    """The role the targets delegate `path` to (the first, as a TUF client searches), if any."""
    if targets.delegations is None:
        return None
    return next((name for name, _ in targets.delegations.get_roles_for_target(path)), None)


def sign(
    build_dir: Path,
    keys_dir: Path,
    *,
    now: datetime,
    lifetime: timedelta = TARGETS_LIFETIME,
    counter_above: int = 0,
) -> Metadata[Targets]:
    """Add the build's release to the key directory's targets, sign with its keys, write both copies.

    With a publisher's key directory the top-level targets are signed (``BUILD/targets.json``);
    with a team's, its delegated role's (``BUILD/delegated/ROLE.json``). The release counter is
    one above the app's last in the record, and above `counter_above` (the hub's highest, when
    the app was released by other keys before).

    Raises:
        BuildError: not a build directory, or files changed since the build.
        SigningError: the release is already signed, the app is delegated to a team (top-level
            keys), or the threshold is not met.
        KeyStoreError: unusable keys.
    """
    release = load_build(build_dir)
    role = signing_role(keys_dir)
    base = load_targets(keys_dir, role=role)
    signed = Targets(version=1, expires=(now + lifetime).replace(microsecond=0))
    if base is not None:
        signed = base.signed
        signed.version += 1
        signed.expires = (now + lifetime).replace(microsecond=0)
    if manifest_path(release.app, release.version) in signed.targets:
        raise SigningError(f"{release.ref} is already signed; releases are immutable, bump the version")
    owner = delegated_to(signed, manifest_path(release.app, release.version))
    if owner is not None:
        raise SigningError(
            f"{release.app} is delegated to the role {owner}: its team signs it with its own keys "
            f"(or revoke the delegation first: edgefleet keys revoke-delegation {owner})"
        )
    counter = max(next_counter(base.signed if base else None, release.app), counter_above + 1)
    if counter > MAX_RELEASE_COUNTER:
        raise SigningError(f"the release counter of {release.app} would pass {MAX_RELEASE_COUNTER}")
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
    body = sign_targets(keys_dir, metadata, role=role)
    _write_signed(build_dir, role, body)
    return metadata


def _write_signed(build_dir: Path, role: str, body: bytes) -> None:
    """The build's one signed targets file: the last signing's, whichever role it was."""
    delegated = build_dir / SIGNED_DELEGATED
    (build_dir / SIGNED_TARGETS).unlink(missing_ok=True)
    if delegated.exists():
        shutil.rmtree(delegated)
    if role == Targets.type:
        write_public_file(build_dir / SIGNED_TARGETS, body)
    else:
        delegated.mkdir()
        write_public_file(delegated / f"{role}.json", body)


def signed_targets(build_dir: Path) -> tuple[str, Path]:
    """The role and file of a signed build's targets metadata.

    Raises:
        BuildError: the build is not signed (or holds two signings, which `sign` never leaves).
    """
    top = build_dir / SIGNED_TARGETS
    delegated = sorted((build_dir / SIGNED_DELEGATED).glob("*.json")) if (build_dir / SIGNED_DELEGATED).is_dir() else []
    if top.is_file() and not delegated:
        return Targets.type, top
    if len(delegated) == 1 and not top.is_file() and role_name_problem(delegated[0].stem) is None:
        return delegated[0].stem, delegated[0]
    raise BuildError(f"{build_dir} is not a signed build: run edgefleet release sign first")
