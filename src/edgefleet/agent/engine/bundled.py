"""The image a verified bundle holds for one engine: found by the release's digest, streamed to the engine's image load.

The agent never hands an engine a bundle as it is. It reads the archive's ``index.json`` and
the documents it needs (each checked against its digest, all bounded), picks the engine's
platform from an index, and streams the engine a tar of that one image: ``oci-layout``, an
``index.json`` naming only it, its blobs copied from the archive as they are read, and a
``manifest.json`` for Docker's image load (`edgefleet.bundles` has the format). Every engine
thus loads the same thing whatever else the archive carries: bundles written before
``manifest.json`` was added load on Docker too, and an index's other platforms stay on the
device's disk instead of passing through the engine's temporary directory.

Only what the release names is loaded: an archive whose ``index.json`` does not list the
release's digest, or whose documents do not hash to their digests, is refused before the
engine sees a byte. Layers are checked by the engines themselves as they load them (Podman
against their digests, Docker against the config's diff IDs). The engine must then hold an
image whose ID is the config's digest (`BundledImage.config`): Docker Engine keeps no digest
reference for a loaded image, so that ID is how the agent knows it there.

Used by `agent.engine.docker`; raises `edgefleet.errors.BundleError`, which it converts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgefleet.bundles import (
    BLOB_DIRECTORIES,
    INDEX_FILE,
    LAYOUT_FILE,
    OCI_LAYOUT,
    OciDescriptor,
    OciIndex,
    OciManifest,
    blob_path,
    docker_archive_files,
    docker_image,
    layout_index,
    pick_platform,
    read_document,
    sha256,
)
from edgefleet.errors import BundleError

if TYPE_CHECKING:
    import tarfile  # loaded when a bundle is first read: an agent at rest reads none

BLOCK = 512
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what the agent reads from a bundle before any of it reaches the engine."""

    members: int = 4096
    document_bytes: int = 8 * 1024 * 1024
    """Largest index.json, manifest, index or config read into memory."""
    index_entries: int = 64
    layers: int = 256


@dataclass(frozen=True, slots=True)
class _Blob:
    """A blob to copy: its name in the layout, where its bytes start in the archive, and how many there are."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class BundledImage:
    """The image a release names, as a bundle holds it for one platform, and what to stream the engine."""

    image: str
    """name@sha256:... as the release names it (a manifest, or an index)."""
    archive: Path
    manifest: str
    """Digest of the platform's image manifest (the release's digest when it names no index)."""
    config: str
    """Digest of the image's config: the ID an engine gives the image it loads."""
    head: tuple[tuple[str, bytes], ...]
    blobs: tuple[_Blob, ...]
    tail: tuple[tuple[str, bytes], ...]


def _members(tar: tarfile.TarFile, limits: ArchiveLimits) -> dict[str, tarfile.TarInfo]:
    """The archive's regular files by name; more members than the limit, or a name twice, is refused."""
    found: dict[str, tarfile.TarInfo] = {}
    for count, member in enumerate(tar, start=1):
        if count > limits.members:
            raise BundleError(f"more than {limits.members} members")
        if not member.isreg() or member.issparse():
            continue
        name = member.name.removeprefix("./")
        if name in found:
            raise BundleError(f"{name} is in the archive twice")
        found[name] = member
    return found


class _Reader:
    """Reads documents and locates blobs in one open archive."""

    def __init__(self, tar: tarfile.TarFile, limits: ArchiveLimits) -> None:
        self.tar = tar
        self.limits = limits
        self.members = _members(tar, limits)

    def member(self, name: str, *, size: int | None = None) -> tarfile.TarInfo:
        member = self.members.get(name)
        if member is None:
            raise BundleError(f"{name} is missing")
        if size is not None and member.size != size:
            raise BundleError(f"{name} has {member.size} bytes where its descriptor says {size}")
        return member

    def read(self, name: str, *, size: int | None = None) -> bytes:
        member = self.member(name, size=size)
        if member.size > self.limits.document_bytes:
            raise BundleError(f"{name} is larger than {self.limits.document_bytes} bytes")
        handle = self.tar.extractfile(member)
        if handle is None:
            raise BundleError(f"{name} cannot be read")
        with handle:
            data = handle.read(member.size)
        if len(data) != member.size:
            raise BundleError(f"{name} ends early")
        return data

    def document(self, descriptor: OciDescriptor) -> tuple[str, OciIndex | OciManifest, bytes]:
        body = self.read(blob_path(descriptor.digest), size=descriptor.size)
        kind, content = read_document(body, digest=descriptor.digest, media_type=descriptor.media_type)
        return kind, content, body

    def blob(self, descriptor: OciDescriptor) -> _Blob:
        member = self.member(blob_path(descriptor.digest), size=descriptor.size)
        return _Blob(blob_path(descriptor.digest), member.offset_data, member.size)


def find_image(
    archive: Path, image: str, *, arch: str, variant: str | None = None, limits: ArchiveLimits | None = None
) -> BundledImage:
    """The image `image` (name@sha256:...) in the bundle `archive`, for an engine on `arch` (and `variant`).

    Raises:
        BundleError: the archive cannot be read, is malformed or over a limit, does not list the
            image's digest in its index.json, has no image for `arch`, or lacks a blob of it.
    """
    import tarfile  # see the imports

    limits = limits or ArchiveLimits()
    try:
        with tarfile.open(archive, mode="r:") as tar:
            return _find(_Reader(tar, limits), archive, image, arch=arch, variant=variant)
    except BundleError as exc:
        raise BundleError(f"bundle {archive.name}: {exc}") from exc
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BundleError(f"bundle {archive.name} cannot be read: {exc}") from exc


def _find(reader: _Reader, archive: Path, image: str, *, arch: str, variant: str | None) -> BundledImage:
    name, _, digest = image.partition("@")
    try:
        listed = OciIndex.model_validate_json(reader.read(INDEX_FILE))
    except ValueError as exc:
        raise BundleError(f"{INDEX_FILE} is not an image index") from exc
    if len(listed.manifests) > reader.limits.index_entries:
        raise BundleError(f"{INDEX_FILE} lists more than {reader.limits.index_entries} images")
    top = next((entry for entry in listed.manifests if entry.digest == digest), None)
    if top is None:
        names = ", ".join(entry.digest for entry in listed.manifests) or "nothing"
        raise BundleError(f"it does not hold {image}: its {INDEX_FILE} lists {names}")
    kind, content, body = reader.document(top)
    blobs = [reader.blob(top)]
    manifest_digest = digest
    if isinstance(content, OciIndex):
        entry = pick_platform(content, arch=arch, variant=variant)
        if entry is None:
            raise BundleError(f"{image} has no image for linux/{arch}{'/' + variant if variant else ''}")
        _, content, _ = reader.document(entry)
        if not isinstance(content, OciManifest):
            raise BundleError(f"index entry {entry.digest} is not an image manifest")
        blobs.append(reader.blob(entry))
        manifest_digest = entry.digest
    if len(content.layers) > reader.limits.layers:
        raise BundleError(f"{manifest_digest} has more than {reader.limits.layers} layers")
    config = reader.read(blob_path(content.config.digest), size=content.config.size)
    if sha256(config) != content.config.digest:
        raise BundleError(f"config {content.config.digest} does not hash to its digest")
    for descriptor in (content.config, *content.layers):
        if all(blob.name != blob_path(descriptor.digest) for blob in blobs):
            blobs.append(reader.blob(descriptor))
    head = (
        (LAYOUT_FILE, OCI_LAYOUT),
        (INDEX_FILE, layout_index(name=name, media_type=kind, digest=digest, size=len(body))),
    )
    # Tagged by the release's digest, so the agent can name the tag from the image reference alone.
    tail = tuple(docker_archive_files([docker_image(name, digest, content)]).items())
    return BundledImage(
        image=image,
        archive=archive,
        manifest=manifest_digest,
        config=content.config.digest,
        head=head,
        blobs=tuple(blobs),
        tail=tail,
    )


def _header(name: str, size: int, *, directory: bool = False) -> bytes:
    import tarfile  # see the imports

    info = tarfile.TarInfo(name)
    info.size, info.mtime = size, 0
    info.type, info.mode = (tarfile.DIRTYPE, 0o755) if directory else (tarfile.REGTYPE, 0o644)
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def load_stream(bundled: BundledImage) -> Iterator[bytes]:
    """The tar the engine loads, produced as it is sent: small files made here, blobs read from the archive.

    Nothing is written to disk; at most `CHUNK` bytes of a blob are held at once.

    Raises:
        BundleError: the archive ends inside a blob (changed since `find_image` read it).
    """
    for name, data in bundled.head:
        yield _header(name, len(data)) + data + _padding(len(data))
    for directory in BLOB_DIRECTORIES:
        yield _header(directory, 0, directory=True)
    with bundled.archive.open("rb") as source:
        for blob in bundled.blobs:
            yield _header(blob.name, blob.size)
            source.seek(blob.offset)
            left = blob.size
            while left:
                chunk = source.read(min(CHUNK, left))
                if not chunk:
                    raise BundleError(f"bundle {bundled.archive.name} ends inside {blob.name}")
                left -= len(chunk)
                yield chunk
            yield _padding(blob.size)
    for name, data in bundled.tail:
        yield _header(name, len(data)) + data + _padding(len(data))
    yield b"\0" * (2 * BLOCK)
