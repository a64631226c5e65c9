"""OCI registry client for `release build`: parse image references, resolve tags to digests, export bundles.

Speaks the OCI distribution API (``/v2/...``) through httpx, anonymously: when a registry
answers 401 with a ``Bearer`` challenge, a pull token is fetched from the realm it names,
so public registries (Docker Hub, GHCR, Quay) work without credentials. Plain HTTP is used
only for hosts the caller lists as insecure, redirects included.

Everything a registry sends is bounded (`RegistryLimits`) and checked against its sha256
digest as it arrives: a manifest's digest is the hash of its exact bytes, and an exported
blob that does not hash to its descriptor's digest aborts the export before anything
appears at the destination.

Errors::

    PublisherError
     └── RegistryError                   bad reference, unknown image or tag, refused, malformed or
          │                              oversized answer, digest mismatch: retrying will not help
          └── RegistryUnavailableError   unreachable, timed out, 5xx or rate limited: retrying later may

Used by `edgefleet.publisher.release.build` (``resolver=client.resolve``, ``exporter=client.export``)
and by the `edgefleet release` commands.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, get_args

import httpx
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from edgefleet.bundles import (
    ARCH_ALIASES,
    BLOB_DIRECTORIES,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_FILE,
    INDEX_TYPES,
    LAYOUT_FILE,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_LAYOUT,
    OCI_MANIFEST,
    DockerImage,
    OciDescriptor,
    OciIndex,
    OciManifest,
    blob_path,
    docker_archive_files,
    docker_image,
    layout_index,
    linux_images,
    sha256,
)
from edgefleet.protocol import Arch
from edgefleet.publisher.errors import PublisherError

ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

DOCKER_HUB = "registry-1.docker.io"
DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", DOCKER_HUB})
ARCHITECTURES: tuple[str, ...] = get_args(Arch)
"""The architectures edgefleet knows, in the order releases list them."""

MAX_REFERENCE_LENGTH = 512
MAX_NAME_LENGTH = 255
MAX_CHALLENGE_LENGTH = 4096

_HOST_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_HOST = re.compile(rf"(?P<host>{_HOST_LABEL}(?:\.{_HOST_LABEL})*)(?::(?P<port>[0-9]{{1,5}}))?", re.ASCII)
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+", re.ASCII)
_CHALLENGE_PARAM = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_-]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)'  # key="quoted value"
    r'|\s*([A-Za-z][A-Za-z0-9_-]*)=([^\s,"]+)\s*(?:,|$)'  # key=token
)


class RegistryError(PublisherError):
    """An image cannot be resolved or exported; the message names the image and says why."""


class RegistryUnavailableError(RegistryError):
    """The registry could not be reached, timed out, failed (5xx) or rate-limited us: retrying later may help."""


@dataclass(frozen=True)
class RegistryLimits:
    """Bounds on everything a registry sends."""

    manifest_bytes: int = 4 * 1024 * 1024
    """Largest manifest or index (distribution's own limit for pushes)."""
    config_bytes: int = 8 * 1024 * 1024
    blob_bytes: int = 8 * 1024**3
    """Largest single layer."""
    archive_bytes: int = 16 * 1024**3
    """Largest OCI archive `export` writes (sum of its blobs)."""
    index_entries: int = 64
    layers: int = 256
    token_bytes: int = 64 * 1024
    error_body_bytes: int = 16 * 1024
    timeout: float = 30.0
    """Seconds for connecting and between two reads, not for a whole download."""
    redirects: int = 5


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed image reference: where its registry's API is, which repository, and which tag or digest."""

    registry: str
    """host[:port] of the distribution API (Docker Hub's is registry-1.docker.io)."""
    repository: str
    tag: str | None
    digest: str | None
    written: str = field(default="", compare=False)
    """The reference as the user wrote it, for messages."""

    @property
    def name(self) -> str:
        """Fully qualified name, as container engines write it (docker.io/library/nginx for Docker Hub)."""
        host = "docker.io" if self.registry == DOCKER_HUB else self.registry
        return f"{host}/{self.repository}"

    @property
    def target(self) -> str:
        """What the manifest is fetched by: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> str:
        """The image pinned by `digest` (name@sha256:...), tag dropped."""
        return f"{self.name}@{digest}"

    @property
    def canonical(self) -> str:
        """NAME[:TAG][@DIGEST] with the name fully qualified."""
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.written or self.canonical


@dataclass(frozen=True, slots=True)
class Resolved:
    """An image reference resolved against its registry."""

    image: str
    """name@sha256:... of the manifest (an index for multi-architecture images)."""
    architectures: tuple[str, ...]
    """Linux architectures edgefleet knows that the image has, in `ARCHITECTURES` order."""

    @property
    def digest(self) -> str:
        return self.image.rsplit("@", 1)[1]


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


def _bad_reference(text: str, why: str) -> RegistryError:
    return RegistryError(
        f"{_show(text)} is not an image reference ([HOST[:PORT]/]REPOSITORY[:TAG][@sha256:...]): {why}"
    )


def parse_registry_host(text: str) -> str:
    """Check a registry host (HOST or HOST:PORT) and lowercase it.

    Raises:
        RegistryError: not a host name or IPv4 address with an optional port 1..65535.
    """
    match = _HOST.fullmatch(text) if len(text) <= MAX_NAME_LENGTH else None
    if not match or (match.group("port") is not None and not 1 <= int(match.group("port")) <= 65535):
        raise RegistryError(f"{_show(text)} is not a registry HOST[:PORT]")
    return text.lower()


def parse_reference(text: str) -> Reference:
    """Parse ``[HOST[:PORT]/]REPOSITORY[:TAG][@sha256:HEX]`` the way container engines do.

    The first path component is a registry host when it contains ``.`` or ``:``, is
    ``localhost``, or has capitals; otherwise the image is on Docker Hub, where
    one-component names live under ``library/``. No tag and no digest means ``latest``.

    Raises:
        RegistryError: not a reference (the message says which part is wrong).
    """
    if not isinstance(text, str) or not text:
        raise RegistryError("an image reference must be a non-empty string")
    if len(text) > MAX_REFERENCE_LENGTH:
        raise _bad_reference(text, f"longer than {MAX_REFERENCE_LENGTH} characters")
    if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        raise _bad_reference(text, "only printable ASCII without spaces")
    remainder, at, digest = text.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise _bad_reference(text, "the digest must be sha256: and 64 lowercase hex digits")
    tag: str | None = None
    colon, slash = remainder.rfind(":"), remainder.rfind("/")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise _bad_reference(text, f"bad tag {_show(tag)} (letters, digits, '_', '.', '-'; at most 128)")
    first, sep, rest = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = _registry_in(text, first), rest
    else:
        registry, path = DOCKER_HUB, remainder
    if registry in DOCKER_HUB_NAMES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            raise _bad_reference(
                text, f"bad repository component {_show(component)} (lowercase letters, digits, '.', '_', '-')"
            )
    if len(registry) + 1 + len(path) > MAX_NAME_LENGTH:
        raise _bad_reference(text, f"the name is longer than {MAX_NAME_LENGTH} characters")
    return Reference(
        registry=registry, repository=path, tag=tag if tag or at else "latest", digest=digest or None, written=text
    )


def _registry_in(text: str, host: str) -> str:
    try:
        return parse_registry_host(host)
    except RegistryError:
        raise _bad_reference(text, f"bad registry host {_show(host)}") from None


# --- what registries send ----------------------------------------------------------------


class _ImageConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    architecture: Annotated[str, StringConstraints(max_length=128)] = ""
    os: Annotated[str, StringConstraints(max_length=128)] = ""


@dataclass(frozen=True)
class _Manifest:
    """A manifest or index as fetched: exact bytes, their digest, and the parsed content."""

    media_type: str
    digest: str
    body: bytes
    content: OciIndex | OciManifest


def _arch(name: str) -> str | None:
    name = ARCH_ALIASES.get(name, name)
    return name if name in ARCHITECTURES else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def parse_challenge(header: str) -> dict[str, str] | None:
    """The parameters of a ``Bearer`` WWW-Authenticate challenge, or None for another scheme.

    Raises:
        RegistryError: a Bearer challenge that does not parse, or is longer than MAX_CHALLENGE_LENGTH.
    """
    if len(header) > MAX_CHALLENGE_LENGTH:
        raise RegistryError(f"authentication challenge longer than {MAX_CHALLENGE_LENGTH} characters")
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    params: dict[str, str] = {}
    position, rest = 0, rest.strip()
    while position < len(rest):
        match = _CHALLENGE_PARAM.match(rest, position)
        if not match or match.end() == position:
            raise RegistryError(f"malformed authentication challenge {_show(header)}")
        if match.group(1) is not None:
            params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", match.group(2))
        else:
            params[match.group(3).lower()] = match.group(4)
        position = match.end()
    return params


class _VerifyingReader(io.RawIOBase):
    """A blob download read as a file: counts and hashes it, refuses more, fewer or other bytes than described."""

    def __init__(self, chunks: Iterator[bytes], descriptor: OciDescriptor, what: str) -> None:
        super().__init__()
        self._chunks = chunks
        self._descriptor = descriptor
        self._what = what
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._received = 0

    def readable(self) -> bool:
        return True

    def _pull(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._received += len(chunk)
        if self._received > self._descriptor.size:
            raise RegistryError(f"{self._what}: more than the {self._descriptor.size} bytes its descriptor states")
        self._hash.update(chunk)
        self._buffer += chunk
        return True

    def read(self, size: int = -1) -> bytes:
        want = self._descriptor.size if size < 0 else size
        while len(self._buffer) < want and self._received < self._descriptor.size:
            if not self._pull():
                expected = self._descriptor.size
                raise RegistryError(
                    f"{self._what}: ended after {self._received} of the {expected} bytes it should have"
                )
        data = bytes(self._buffer[:want])
        del self._buffer[:want]
        return data

    def finish(self) -> None:
        """Check that the download ended where the descriptor says and hashed to its digest."""
        while self._pull():
            pass
        if self._received != self._descriptor.size or "sha256:" + self._hash.hexdigest() != self._descriptor.digest:
            raise RegistryError(f"{self._what}: content does not match its digest {self._descriptor.digest}")


class _ArchiveWriter:
    """Adds files to an OCI layout tar once each, within the archive's size budget."""

    def __init__(self, archive: tarfile.TarFile, budget: int) -> None:
        self.archive = archive
        self.budget = budget
        self.written: set[str] = set()

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        if size > self.budget:
            raise RegistryError(f"the archive would be larger than the limit (stopped at {name})")
        self.budget -= size
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        return info

    def directory(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
        self.archive.addfile(info)

    def add_bytes(self, name: str, data: bytes) -> None:
        if name not in self.written:
            self.archive.addfile(self._info(name, len(data)), io.BytesIO(data))
            self.written.add(name)

    def add_stream(self, name: str, reader: _VerifyingReader, size: int) -> None:
        self.archive.addfile(self._info(name, size), reader)
        reader.finish()
        self.written.add(name)


class RegistryClient:
    """Anonymous client of OCI registries: `resolve` tags to digests, `export` images as OCI archives.

    Args:
        insecure: registries (HOST[:PORT]) reached over plain HTTP; every other one only over HTTPS.
        limits: bounds on what registries send.
        transport: httpx transport (tests of callers may swap it; the default talks to the network).

    Raises:
        RegistryError: an entry of `insecure` is not HOST[:PORT].
    """

    def __init__(
        self,
        *,
        insecure: Iterable[str] = (),
        limits: RegistryLimits | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.limits = limits or RegistryLimits()
        self.insecure = frozenset(parse_registry_host(host) for host in insecure)
        self._tokens: dict[tuple[str, str], str] = {}
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(self.limits.timeout),
            follow_redirects=True,
            max_redirects=self.limits.redirects,
            headers={"User-Agent": "edgefleet", "Accept-Encoding": "identity"},
            event_hooks={"request": [self._check_scheme]},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- public operations ---------------------------------------------------------

    def resolve(self, image: str) -> Resolved:
        """Fetch the manifest `image` names and return it pinned by digest, with the architectures it has.

        The digest is the sha256 of the manifest's exact bytes (checked against the
        registry's Docker-Content-Digest, and against the reference's own digest if it has
        one). Architectures come from an index's platforms (attestation entries, whose
        platform is unknown, are skipped) or from a single manifest's config.

        Raises:
            RegistryError: bad reference, unknown image or tag, malformed or oversized manifest.
            RegistryUnavailableError: the registry cannot be reached now.
        """
        ref = parse_reference(image)
        with self._boundary(ref):
            manifest = self._manifest(ref, ref.target)
            architectures = self._architectures(ref, manifest)
        return Resolved(image=ref.pinned(manifest.digest), architectures=architectures)

    def export(self, image: str, destination: Path) -> None:
        """Write `image` (pinned by digest) to `destination` as a bundle archive (`edgefleet.bundles`).

        The archive holds ``oci-layout``, ``index.json`` (one entry: the image's manifest
        or index, named by the ``org.opencontainers.image.ref.name`` annotation),
        ``blobs/sha256/HEX`` for the manifest, every manifest of an index, their configs
        and layers, and the ``manifest.json`` and ``repositories`` `docker load` reads.
        Each blob is verified against its digest while it downloads; the archive is written
        to a temporary file beside `destination` and renamed into place only when
        complete, so a failed export leaves nothing behind.

        Raises:
            RegistryError: not pinned by digest, unknown image, a blob that does not match its
                digest, a size limit passed, or `destination` not writable.
            RegistryUnavailableError: the registry cannot be reached now.
        """
        ref = parse_reference(image)
        if ref.digest is None:
            raise RegistryError(f"{image}: only images pinned by digest (name@sha256:...) are exported")
        with self._boundary(ref):
            top = self._manifest(ref, ref.digest)
            try:
                descriptor, name = tempfile.mkstemp(
                    dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
                )
            except OSError as exc:
                raise RegistryError(f"{image}: cannot write into {destination.parent}: {_one_line(exc)}") from exc
            partial = Path(name)
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as archive:
                        self._write_layout(ref, top, _ArchiveWriter(archive, self.limits.archive_bytes))
                    os.fchmod(handle.fileno(), 0o644)
                    handle.flush()
                    os.fsync(handle.fileno())
                partial.replace(destination)
            except OSError as exc:
                partial.unlink(missing_ok=True)
                raise RegistryError(f"{image}: cannot write {destination}: {_one_line(exc)}") from exc
            except BaseException:
                partial.unlink(missing_ok=True)
                raise

    # --- manifests --------------------------------------------------------------------

    def _manifest(self, ref: Reference, target: str, *, descriptor: OciDescriptor | None = None) -> _Manifest:
        what = f"{ref}: manifest {target}" if target != ref.target else f"{ref}: manifest"
        with self._get(ref, f"manifests/{target}", accept=ACCEPT, what=what) as response:
            body = self._read(response, self.limits.manifest_bytes, what)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            announced = response.headers.get("Docker-Content-Digest")
        digest = sha256(body)
        if target.startswith("sha256:") and digest != target:
            raise RegistryError(f"{what}: the registry sent a manifest whose digest is {digest}")
        if announced and announced.startswith("sha256:") and announced != digest:
            raise RegistryError(f"{what}: Docker-Content-Digest {announced} is not the digest of the bytes sent")
        media_type, content = self._parse_manifest(body, content_type, what)
        if descriptor is not None and (descriptor.size != len(body) or descriptor.media_type != media_type):
            raise RegistryError(f"{what}: size or media type differs from the index entry that names it")
        return _Manifest(media_type=media_type, digest=digest, body=body, content=content)

    def _parse_manifest(self, body: bytes, content_type: str, what: str) -> tuple[str, OciIndex | OciManifest]:
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise RegistryError(f"{what}: not JSON ({_one_line(exc)})") from exc
        if not isinstance(raw, dict):
            raise RegistryError(f"{what}: not a JSON object")
        declared = raw.get("mediaType")
        known = INDEX_TYPES | MANIFEST_TYPES
        if declared is not None and (not isinstance(declared, str) or declared not in known):
            raise RegistryError(f"{what}: unsupported media type {_show(str(declared))}")
        if declared and content_type in known and content_type != declared:
            raise RegistryError(f"{what}: served as {content_type} but declares {declared}")
        media_type = declared or content_type
        if media_type not in known:
            raise RegistryError(f"{what}: unsupported manifest type {_show(content_type or 'none')}")
        try:
            if media_type in INDEX_TYPES:
                index = OciIndex.model_validate(raw)
                if len(index.manifests) > self.limits.index_entries:
                    raise RegistryError(f"{what}: more than {self.limits.index_entries} entries")
                return media_type, index
            manifest = OciManifest.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "(document)"
            raise RegistryError(f"{what}: malformed at {where}: {first.get('msg', 'invalid')}") from exc
        if len(manifest.layers) > self.limits.layers:
            raise RegistryError(f"{what}: more than {self.limits.layers} layers")
        return media_type, manifest

    def _architectures(self, ref: Reference, manifest: _Manifest) -> tuple[str, ...]:
        found: set[str | None] = set()
        if isinstance(manifest.content, OciIndex):
            for entry in manifest.content.manifests:
                # Attestations (SBOM, provenance) sit in the index with platform unknown/unknown.
                if entry.platform and entry.platform.os == "linux" and entry.platform.architecture != "unknown":
                    found.add(_arch(entry.platform.architecture))
        else:
            config = self._config(ref, manifest.content.config)
            if config.os == "linux":
                found.add(_arch(config.architecture))
        return tuple(arch for arch in ARCHITECTURES if arch in found)

    def _config(self, ref: Reference, descriptor: OciDescriptor) -> _ImageConfig:
        what = f"{ref}: config {descriptor.digest}"
        if descriptor.size > self.limits.config_bytes:
            raise RegistryError(f"{what}: larger than {self.limits.config_bytes} bytes")
        with self._get(ref, f"blobs/{descriptor.digest}", what=what) as response:
            body = self._read(response, descriptor.size, what)
        if len(body) != descriptor.size or sha256(body) != descriptor.digest:
            raise RegistryError(f"{what}: content does not match its digest")
        try:
            return _ImageConfig.model_validate_json(body)
        except ValidationError as exc:
            raise RegistryError(f"{what}: not an image config ({_one_line(exc)})") from exc

    # --- export -----------------------------------------------------------------------

    def _write_layout(self, ref: Reference, top: _Manifest, writer: _ArchiveWriter) -> None:
        """The OCI layout of `top`, then the ``manifest.json`` and ``repositories`` Docker's image load reads.

        ``manifest.json`` lists every Linux image (an index's attestations and other systems
        are left out: Docker refuses to load them), each tagged by its own manifest's digest.
        """
        writer.add_bytes(LAYOUT_FILE, OCI_LAYOUT)
        writer.add_bytes(
            INDEX_FILE, layout_index(name=ref.name, media_type=top.media_type, digest=top.digest, size=len(top.body))
        )
        for directory in BLOB_DIRECTORIES:
            writer.directory(directory)
        writer.add_bytes(blob_path(top.digest), top.body)
        images: list[OciManifest] = []
        loadable: list[DockerImage] = []
        if isinstance(top.content, OciIndex):
            platforms = {entry.digest for entry in linux_images(top.content)}
            for entry in top.content.manifests:
                if entry.media_type not in MANIFEST_TYPES:
                    raise RegistryError(f"{ref}: index entry {entry.digest} is a {entry.media_type}, not an image")
                child = self._manifest(ref, entry.digest, descriptor=entry)
                writer.add_bytes(blob_path(child.digest), child.body)
                if not isinstance(child.content, OciManifest):
                    raise RegistryError(f"{ref}: index entry {entry.digest} is not an image manifest")
                images.append(child.content)
                if entry.digest in platforms:
                    loadable.append(docker_image(ref.name, child.digest, child.content))
        else:
            images.append(top.content)
            loadable.append(docker_image(ref.name, top.digest, top.content))
        for image in images:
            for blob in (image.config, *image.layers):
                if blob_path(blob.digest) not in writer.written:
                    self._copy_blob(ref, blob, writer)
        for name, data in docker_archive_files(loadable).items():
            writer.add_bytes(name, data)

    def _copy_blob(self, ref: Reference, descriptor: OciDescriptor, writer: _ArchiveWriter) -> None:
        what = f"{ref}: blob {descriptor.digest}"
        if descriptor.size > self.limits.blob_bytes:
            raise RegistryError(f"{what}: larger than {self.limits.blob_bytes} bytes")
        with self._get(ref, f"blobs/{descriptor.digest}", what=what) as response:
            reader = _VerifyingReader(response.iter_bytes(), descriptor, what)
            writer.add_stream(blob_path(descriptor.digest), reader, descriptor.size)

    # --- HTTP -------------------------------------------------------------------------

    def _base(self, registry: str) -> str:
        return f"{'http' if registry in self.insecure else 'https'}://{registry}"

    def _check_scheme(self, request: httpx.Request) -> None:
        """Every request, redirects and token realms included: HTTPS, or HTTP to a host listed as insecure."""
        url = request.url
        netloc = url.host + (f":{url.port}" if url.port else "")
        if url.scheme == "https" or (url.scheme == "http" and netloc.lower() in self.insecure):
            return
        raise RegistryError(f"refusing {url.scheme}://{netloc}: plain HTTP only to registries listed as insecure")

    @contextlib.contextmanager
    def _boundary(self, ref: Reference) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(f"{ref}: cannot reach {ref.registry}: {_one_line(exc)}") from exc
        except httpx.HTTPError as exc:
            raise RegistryError(f"{ref}: {ref.registry}: {_one_line(exc)}") from exc

    @contextlib.contextmanager
    def _get(self, ref: Reference, path: str, *, what: str, accept: str | None = None) -> Iterator[httpx.Response]:
        """GET /v2/REPOSITORY/PATH, streamed, with a pull token when the registry asks for one; answers 2xx only."""
        url = f"{self._base(ref.registry)}/v2/{ref.repository}/{path}"
        headers = {"Accept": accept} if accept else {}
        key = (ref.registry, ref.repository)
        if key in self._tokens:
            headers["Authorization"] = f"Bearer {self._tokens[key]}"
        response = self._http.send(self._http.build_request("GET", url, headers=headers), stream=True)
        if response.status_code == 401:
            challenges = response.headers.get_list("WWW-Authenticate")
            response.close()
            self._tokens[key] = self._token(ref, challenges)
            headers["Authorization"] = f"Bearer {self._tokens[key]}"
            response = self._http.send(self._http.build_request("GET", url, headers=headers), stream=True)
        try:
            self._check_status(response, what)
            yield response
        finally:
            response.close()

    def _token(self, ref: Reference, challenges: list[str]) -> str:
        """An anonymous pull token from the realm of the registry's Bearer challenge."""
        params = None
        for challenge in challenges:
            params = parse_challenge(challenge)
            if params is not None:
                break
        if params is None or not params.get("realm"):
            raise RegistryError(
                f"{ref}: {ref.registry} asks for credentials; edgefleet pulls anonymously (public images only)"
            )
        try:
            realm = httpx.URL(params["realm"])
        except httpx.InvalidURL as exc:
            raise RegistryError(f"{ref}: bad token realm {_show(params['realm'])}") from exc
        if realm.scheme not in ("http", "https") or not realm.host:
            raise RegistryError(f"{ref}: bad token realm {_show(params['realm'])}")
        query = {"scope": f"repository:{ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        what = f"{ref}: token from {realm.host}"
        with self._http.stream("GET", realm, params=query) as response:
            self._check_status(response, what)
            body = self._read(response, self.limits.token_bytes, what)
        try:
            answer: Any = json.loads(body)
        except ValueError as exc:
            raise RegistryError(f"{what}: not JSON") from exc
        token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise RegistryError(f"{what}: the answer holds no usable token")
        return token

    def _check_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = self._error_detail(response)
        if status in (401, 403):
            raise RegistryError(f"{what}: refused (HTTP {status}{detail}); edgefleet pulls public images only")
        if status == 404:
            raise RegistryError(f"{what}: not found (HTTP 404{detail})")
        if status == 429 or status >= 500:
            raise RegistryUnavailableError(f"{what}: the registry answered HTTP {status}{detail}; try again later")
        raise RegistryError(f"{what}: HTTP {status}{detail}")

    def _error_detail(self, response: httpx.Response) -> str:
        """`: CODE message` from a distribution error body, if the answer has one."""
        try:
            body = self._read(response, self.limits.error_body_bytes, "error")
            errors = json.loads(body).get("errors") or [{}]
            code, message = str(errors[0].get("code", "")), str(errors[0].get("message", ""))
        except (RegistryError, httpx.HTTPError, ValueError, AttributeError, IndexError, TypeError):
            return ""
        text = " ".join(f"{code} {message}".split())[:200]
        return f": {text}" if text else ""

    def _read(self, response: httpx.Response, limit: int, what: str) -> bytes:
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise RegistryError(f"{what}: larger than {limit} bytes ({length})")
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise RegistryError(f"{what}: larger than {limit} bytes")
        return bytes(body)
