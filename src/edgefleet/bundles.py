"""The bundle archive format: an OCI image layout `docker load` reads too; the publisher writes it, the agent reads it.

A bundle is an uncompressed tar holding one image pinned by digest: a manifest, or an index
of one manifest per platform::

    oci-layout         {"imageLayoutVersion": "1.0.0"}
    index.json         one entry: the image's manifest or index, named NAME@sha256:HEX by annotations
    blobs/sha256/HEX   the index, its manifests, their configs and layers, each under its digest
    manifest.json      what `docker load` reads: per Linux image its config, its layers and a tag
    repositories       the same tags in the older docker-archive form

Podman, skopeo and containerd read the OCI layout and keep the manifest digest, so
``NAME@sha256:HEX`` names the loaded image. Docker Engine 20.10 (Moby, balenaEngine) reads
only ``manifest.json``: the image it stores has the config's digest as its ID and the tag
`loaded_tag` makes (``NAME:sha256-HEX``), and no digest reference. Tags are names for
people: nothing in edgefleet trusts one.

Archives written before ``manifest.json`` was added (an OCI layout alone) stay valid: the agent
never loads an archive as it is, but streams the engine a layout of the one image it needs
(`edgefleet.agent.engine.bundled`), with ``manifest.json`` and ``index.json`` of its own.

Bytes in, values out: `read_document` checks a blob against its digest before parsing it;
nothing here reads files or talks to an engine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from edgefleet.errors import BundleError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
DOCKER_MANIFEST_FILE = "manifest.json"
REPOSITORIES_FILE = "repositories"
OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
BLOB_DIRECTORIES = ("blobs/", "blobs/sha256/")

ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64"}
"""Architecture names some images use for the OCI ones."""

_Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
_ShortText = Annotated[str, StringConstraints(max_length=128)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class OciPlatform(_Wire):
    """Where an index entry's image runs."""

    architecture: _ShortText
    os: _ShortText
    variant: _ShortText | None = None

    @property
    def linux_image(self) -> bool:
        """A Linux image for a real architecture (build attestations say unknown/unknown)."""
        return self.os == "linux" and self.architecture != "unknown"


class OciDescriptor(_Wire):
    """A reference to a blob: its media type, digest and size (and, in an index, its platform)."""

    media_type: Annotated[str, StringConstraints(max_length=255)] = Field(alias="mediaType")
    digest: _Digest
    size: Annotated[int, Field(ge=0)]
    platform: OciPlatform | None = None


class OciIndex(_Wire):
    """An image index (OCI) or manifest list (Docker): one manifest per platform."""

    schema_version: Literal[2] = Field(alias="schemaVersion")
    manifests: list[OciDescriptor]


class OciManifest(_Wire):
    """An image manifest (OCI, or Docker schema 2): a config and its layers."""

    schema_version: Literal[2] = Field(alias="schemaVersion")
    config: OciDescriptor
    layers: list[OciDescriptor]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(digest: str) -> str:
    """Where a blob lives in an OCI image layout."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def layout_index(*, name: str, media_type: str, digest: str, size: int) -> bytes:
    """``index.json`` of a bundle: the one image, named ``NAME@DIGEST`` for OCI tools and containerd."""
    pinned = f"{name}@{digest}"
    entry = {
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {REF_NAME_ANNOTATION: pinned, CONTAINERD_NAME_ANNOTATION: pinned},
    }
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}, indent=2).encode()


def loaded_tag(name: str, manifest_digest: str) -> str:
    """The tag an image loaded from a bundle has on Docker: ``NAME:sha256-HEX``, HEX from `manifest_digest`.

    Archives tag each image by its own manifest's digest; the agent's loads by the digest the
    release names (an index's, for a multi-platform image), so it can name the tag from the
    image reference alone.
    """
    return f"{name}:{manifest_digest.replace(':', '-')}"


def familiar(name: str) -> str:
    """A name as `docker save` writes it: Docker Hub's ``docker.io/`` and ``library/`` left out."""
    if name.startswith("docker.io/"):
        name = name.removeprefix("docker.io/")
        return name.removeprefix("library/") if name.count("/") == 1 else name
    return name


@dataclass(frozen=True, slots=True)
class DockerImage:
    """One image in ``manifest.json``: where its config and layers are in the archive, and its tag."""

    config: str
    """Digest of its config (Docker's image ID once loaded)."""
    layers: tuple[str, ...]
    """Digests of its layers, base first."""
    tag: str
    """NAME:TAG."""


def docker_image(name: str, manifest_digest: str, manifest: OciManifest) -> DockerImage:
    """The ``manifest.json`` entry of the image `manifest` (whose digest is `manifest_digest`) describes."""
    return DockerImage(
        config=manifest.config.digest,
        layers=tuple(layer.digest for layer in manifest.layers),
        tag=loaded_tag(name, manifest_digest),
    )


def docker_archive_files(images: Iterable[DockerImage]) -> dict[str, bytes]:
    """``manifest.json`` and ``repositories``, as `docker save` writes them beside an OCI layout."""
    entries = []
    repositories: dict[str, dict[str, str]] = {}
    for image in images:
        entries.append(
            {
                "Config": blob_path(image.config),
                "RepoTags": [familiar(image.tag)],
                "Layers": [blob_path(layer) for layer in image.layers],
            }
        )
        name, _, tag = image.tag.rpartition(":")
        if image.layers:
            top = image.layers[-1].partition(":")[2]
            repositories.setdefault(familiar(name), {})[tag] = top
    return {
        DOCKER_MANIFEST_FILE: json.dumps(entries, indent=2).encode(),
        REPOSITORIES_FILE: json.dumps(repositories, indent=2).encode(),
    }


def read_document(body: bytes, *, digest: str, media_type: str | None = None) -> tuple[str, OciIndex | OciManifest]:
    """The media type and content of an index or image manifest, from a blob that must hash to `digest`.

    The document's own ``mediaType`` says what it is; `media_type` (from the descriptor that
    names it) stands in when the document has none, and must agree when both are present.

    Raises:
        BundleError: other bytes than `digest` names, not JSON, an unknown media type, or malformed.
    """
    if sha256(body) != digest:
        raise BundleError(f"blob {digest} does not hash to its digest")
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{digest}: not JSON") from exc
    declared = raw.get("mediaType") if isinstance(raw, dict) else None
    if declared is not None and media_type is not None and declared != media_type:
        raise BundleError(f"{digest}: declares {declared!r} where the descriptor naming it says {media_type!r}")
    kind = declared if isinstance(declared, str) else media_type
    try:
        if kind in INDEX_TYPES:
            return kind, OciIndex.model_validate(raw)
        if kind in MANIFEST_TYPES:
            return kind, OciManifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "(document)"
        raise BundleError(f"{digest}: malformed at {where}: {first.get('msg', 'invalid')}") from exc
    raise BundleError(f"{digest}: not an image manifest or index (media type {kind!r})")


def linux_images(index: OciIndex) -> list[OciDescriptor]:
    """The index's image manifests for Linux on a real architecture (attestations and other systems left out)."""
    return [
        entry
        for entry in index.manifests
        if entry.media_type in MANIFEST_TYPES and entry.platform is not None and entry.platform.linux_image
    ]


def pick_platform(index: OciIndex, *, arch: str, variant: str | None = None) -> OciDescriptor | None:
    """The entry of `index` an engine on `arch` (and `variant`, when known) runs; None when it has none.

    Among the Linux entries for the architecture: the one of the same variant, else one
    without a variant, else the first.
    """
    arch = ARCH_ALIASES.get(arch, arch)
    candidates = [(entry, entry.platform) for entry in linux_images(index) if entry.platform is not None]
    candidates = [(e, p) for e, p in candidates if ARCH_ALIASES.get(p.architecture, p.architecture) == arch]
    for wanted in (variant, None):
        for entry, platform in candidates:
            if platform.variant == wanted:
                return entry
    return candidates[0][0] if candidates else None
