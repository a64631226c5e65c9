"""Reading a bundle on the device: the release's image found by digest for the engine's platform, and the tar streamed.

Archives are built here byte by byte (old format: an OCI layout alone; new: with Docker's
manifest.json), so each test changes exactly what it is about.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgefleet.agent.engine.bundled import ArchiveLimits, BundledImage, find_image, load_stream
from edgefleet.bundles import (
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME_ANNOTATION,
    blob_path,
    docker_archive_files,
    docker_image,
    layout_index,
    sha256,
)
from edgefleet.bundles import OciManifest as Manifest
from edgefleet.errors import BundleError

NAME = "registry.example/acme/sensor"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
IN_TOTO = "application/vnd.in-toto+json"


def layer(content: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        info = tarfile.TarInfo("etc/content")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass
class Layout:
    """The blobs of an OCI layout being built, and the index.json entries it will have."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    index: list[dict[str, Any]] = field(default_factory=list)
    manifests: dict[str, bytes] = field(default_factory=dict)
    """Manifest digest -> bytes, of the images (not indexes) added."""

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        self.blobs[sha256(data)] = data
        return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}

    def image(self, arch: str, *, layers: tuple[bytes, ...] | None = None) -> dict[str, Any]:
        """A one-platform image; its manifest descriptor (with platform)."""
        parts = layers if layers is not None else (layer(f"{arch} base".encode()), layer(f"{arch} app".encode()))
        config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}}).encode()
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": self.blob(config, OCI_CONFIG),
                "layers": [self.blob(data, OCI_LAYER) for data in parts],
            }
        ).encode()
        self.manifests[sha256(body)] = body
        return {**self.blob(body, OCI_MANIFEST), "platform": {"architecture": arch, "os": "linux"}}

    def multi(self, *archs: str) -> dict[str, Any]:
        """An index of one image per arch and an attestation, as buildx makes them."""
        entries = [self.image(arch) for arch in archs]
        statement = self.blob(b'{"_type": "https://in-toto.io/Statement/v0.1"}', IN_TOTO)
        attestation = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": self.blob(b"{}", OCI_CONFIG),
                "layers": [statement],
            }
        ).encode()
        entries.append(
            {**self.blob(attestation, OCI_MANIFEST), "platform": {"architecture": "unknown", "os": "unknown"}}
        )
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        return self.blob(body, OCI_INDEX)

    def write(
        self, path: Path, top: dict[str, Any], *, docker: bool = True, extra: dict[str, bytes] | None = None
    ) -> str:
        """The archive of `top` (old format without `docker`); returns the image reference."""
        files = {
            "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
            "index.json": layout_index(name=NAME, media_type=top["mediaType"], digest=top["digest"], size=top["size"]),
        }
        files.update({blob_path(digest): data for digest, data in self.blobs.items()})
        if docker:
            images = [
                docker_image(NAME, digest, Manifest.model_validate_json(body))
                for digest, body in self.manifests.items()
            ]
            files.update(docker_archive_files(images))
        files.update(extra or {})
        write_tar(path, files)
        return f"{NAME}@{top['digest']}"


def write_tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def streamed(bundled: BundledImage) -> dict[str, bytes]:
    """What the engine receives, as name -> bytes, in order; the stream must be a well-formed tar."""
    data = b"".join(load_stream(bundled))
    assert len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        members = archive.getmembers()
        assert [m.name for m in members if m.isdir()] == ["blobs", "blobs/sha256"]
        return {m.name: archive.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]


def test_a_single_image_is_streamed_with_an_index_and_a_docker_manifest_of_its_own(tmp_path: Path) -> None:
    layout = Layout()
    top = layout.image("amd64")
    image = layout.write(tmp_path / "b.tar", top)
    manifest = json.loads(layout.blobs[top["digest"]])

    bundled = find_image(tmp_path / "b.tar", image, arch="amd64")

    assert (bundled.manifest, bundled.config) == (top["digest"], manifest["config"]["digest"])
    files = streamed(bundled)
    blobs = [top["digest"], manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    assert list(files) == ["oci-layout", "index.json", *map(blob_path, blobs), "manifest.json", "repositories"]
    assert all(files[blob_path(d)] == layout.blobs[d] for d in blobs)
    [entry] = json.loads(files["index.json"])["manifests"]
    assert entry["digest"] == top["digest"]
    assert entry["annotations"][REF_NAME_ANNOTATION] == image
    assert json.loads(files["manifest.json"]) == [
        {
            "Config": blob_path(manifest["config"]["digest"]),
            "RepoTags": [f"{NAME}:{top['digest'].replace(':', '-')}"],
            "Layers": [blob_path(layer["digest"]) for layer in manifest["layers"]],
        }
    ]


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_only_the_engines_platform_of_an_index_is_streamed(tmp_path: Path, arch: str) -> None:
    layout = Layout()
    top = layout.multi("amd64", "arm64")
    image = layout.write(tmp_path / "b.tar", top)
    index = json.loads(layout.blobs[top["digest"]])
    chosen = next(e for e in index["manifests"] if e["platform"]["architecture"] == arch)
    manifest = json.loads(layout.blobs[chosen["digest"]])

    bundled = find_image(tmp_path / "b.tar", image, arch=arch)

    assert (bundled.manifest, bundled.config) == (chosen["digest"], manifest["config"]["digest"])
    files = streamed(bundled)
    wanted = {top["digest"], chosen["digest"], manifest["config"]["digest"], *(x["digest"] for x in manifest["layers"])}
    assert {name for name in files if name.startswith("blobs/")} == {blob_path(d) for d in wanted}
    # The index is streamed whole (its digest is the release's); Docker loads the one image, tagged by that digest.
    assert json.loads(files["index.json"])["manifests"][0]["digest"] == top["digest"]
    [entry] = json.loads(files["manifest.json"])
    assert entry["Config"] == blob_path(manifest["config"]["digest"])
    assert entry["RepoTags"] == [f"{NAME}:{top['digest'].replace(':', '-')}"]


def test_an_index_without_the_engines_platform_is_refused(tmp_path: Path) -> None:
    layout = Layout()
    image = layout.write(tmp_path / "b.tar", layout.multi("amd64", "arm64"))
    with pytest.raises(BundleError, match="has no image for linux/riscv64"):
        find_image(tmp_path / "b.tar", image, arch="riscv64")


def test_an_old_format_archive_streams_exactly_what_a_new_one_does(tmp_path: Path) -> None:
    layout = Layout()
    top = layout.multi("amd64", "arm64")
    image = layout.write(tmp_path / "new.tar", top)
    layout.write(tmp_path / "old.tar", top, docker=False)
    # Whatever manifest.json an archive carries is never passed on: the agent writes its own.
    lying = json.dumps([{"Config": "blobs/sha256/" + "0" * 64, "RepoTags": ["victim:latest"], "Layers": []}]).encode()
    layout.write(tmp_path / "lying.tar", top, extra={"manifest.json": lying})

    new, old, lie = (streamed(find_image(tmp_path / f"{n}.tar", image, arch="amd64")) for n in ("new", "old", "lying"))

    assert new == old == lie


def test_an_archive_that_does_not_list_the_releases_digest_is_refused(tmp_path: Path) -> None:
    layout = Layout()
    held = layout.image("amd64")
    other = layout.image("amd64", layers=(layer(b"another image"),))  # its blobs are in the archive too
    layout.write(tmp_path / "b.tar", held)
    with pytest.raises(
        BundleError, match=f"does not hold {NAME}@{other['digest']}: its index.json lists {held['digest']}"
    ):
        find_image(tmp_path / "b.tar", f"{NAME}@{other['digest']}", arch="amd64")


def corrupt(layout: Layout, digest: str) -> None:
    data = bytearray(layout.blobs[digest])
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    layout.blobs[digest] = bytes(data)


def test_a_manifest_that_does_not_hash_to_its_digest_is_refused(tmp_path: Path) -> None:
    layout = Layout()
    top = layout.image("amd64")
    corrupt(layout, top["digest"])
    image = layout.write(tmp_path / "b.tar", top, docker=False)
    with pytest.raises(BundleError, match=f"blob {top['digest']} does not hash to its digest"):
        find_image(tmp_path / "b.tar", image, arch="amd64")


def test_a_platform_manifest_that_does_not_hash_to_its_digest_is_refused(tmp_path: Path) -> None:
    layout = Layout()
    top = layout.multi("amd64")
    amd64 = json.loads(layout.blobs[top["digest"]])["manifests"][0]["digest"]
    corrupt(layout, amd64)
    image = layout.write(tmp_path / "b.tar", top, docker=False)
    with pytest.raises(BundleError, match=f"blob {amd64} does not hash"):
        find_image(tmp_path / "b.tar", image, arch="amd64")


def test_a_config_that_does_not_hash_to_its_digest_is_refused(tmp_path: Path) -> None:
    layout = Layout()
    top = layout.image("amd64")
    config = json.loads(layout.blobs[top["digest"]])["config"]["digest"]
    corrupt(layout, config)
    image = layout.write(tmp_path / "b.tar", top, docker=False)
    with pytest.raises(BundleError, match=f"config {config} does not hash"):
        find_image(tmp_path / "b.tar", image, arch="amd64")


def test_a_missing_or_resized_layer_is_refused(tmp_path: Path) -> None:
    layout = Layout()
    top = layout.image("amd64")
    first = json.loads(layout.blobs[top["digest"]])["layers"][0]["digest"]
    del layout.blobs[first]
    image = layout.write(tmp_path / "missing.tar", top, docker=False)
    with pytest.raises(BundleError, match=f"{blob_path(first)} is missing"):
        find_image(tmp_path / "missing.tar", image, arch="amd64")
    layout.blobs[first] = b"short"
    layout.write(tmp_path / "short.tar", top, docker=False)
    with pytest.raises(BundleError, match=f"{blob_path(first)} has 5 bytes where its descriptor says"):
        find_image(tmp_path / "short.tar", image, arch="amd64")


def test_limits_bound_what_is_read(tmp_path: Path) -> None:
    layout = Layout()
    top = layout.multi("amd64", "arm64")
    image = layout.write(tmp_path / "b.tar", top)
    with pytest.raises(BundleError, match="more than 5 members"):
        find_image(tmp_path / "b.tar", image, arch="amd64", limits=ArchiveLimits(members=5))
    with pytest.raises(BundleError, match="larger than 100 bytes"):
        find_image(tmp_path / "b.tar", image, arch="amd64", limits=ArchiveLimits(document_bytes=100))
    with pytest.raises(BundleError, match="more than 1 layers"):
        find_image(tmp_path / "b.tar", image, arch="amd64", limits=ArchiveLimits(layers=1))


def test_a_name_twice_in_the_archive_is_refused(tmp_path: Path) -> None:
    layout = Layout()
    top = layout.image("amd64")
    image = layout.write(tmp_path / "b.tar", top)
    with tarfile.open(tmp_path / "b.tar", "a") as archive:
        info = tarfile.TarInfo("./index.json")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(BundleError, match=r"index\.json is in the archive twice"):
        find_image(tmp_path / "b.tar", image, arch="amd64")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot be read"),
        (b"not a tar archive at all" * 40, "cannot be read"),
        (b"", "index.json is missing"),
    ],
)
def test_an_unreadable_archive_is_refused(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "b.tar"
    if content == b"":
        write_tar(path, {"oci-layout": b"{}"})
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(BundleError, match=f"bundle b.tar.*{message}"):
        find_image(path, f"{NAME}@sha256:{'0' * 64}", arch="amd64")


def test_index_json_must_be_an_image_index(tmp_path: Path) -> None:
    write_tar(tmp_path / "b.tar", {"index.json": b'{"manifests": "all"}'})
    with pytest.raises(BundleError, match=r"index\.json is not an image index"):
        find_image(tmp_path / "b.tar", f"{NAME}@sha256:{'0' * 64}", arch="amd64")


def test_large_layers_stream_in_bounded_chunks_and_a_shrunken_archive_stops_the_stream(tmp_path: Path) -> None:
    layout = Layout()
    big = os.urandom(3 * 1024 * 1024 + 17)  # a stored (not compressible) layer over the chunk size
    top = layout.image("amd64", layers=(big,))
    image = layout.write(tmp_path / "b.tar", top)
    bundled = find_image(tmp_path / "b.tar", image, arch="amd64")

    assert max(len(chunk) for chunk in load_stream(bundled)) <= 1024 * 1024
    assert streamed(bundled)[blob_path(sha256(big))] == big

    [layer_blob] = [blob for blob in bundled.blobs if blob.name == blob_path(sha256(big))]
    with (tmp_path / "b.tar").open("r+b") as archive:
        archive.truncate(layer_blob.offset + 1000)  # everything after the layer's first 1000 bytes is gone
    with pytest.raises(BundleError, match="ends inside blobs/sha256/"):
        b"".join(load_stream(bundled))
