"""What `RegistryClient.export` writes for Docker beside the OCI layout, read back the way the agent reads it.

The registry is an in-memory stand-in (httpx.MockTransport) serving fixed documents: the
logic under test is which images manifest.json lists and how they are tagged. The real
registry's export is tested in tests/integration/registry/test_registry.py.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import httpx
import pytest

from edgefleet.agent.engine.bundled import find_image
from edgefleet.bundles import DOCKER_LIST, DOCKER_MANIFEST, OCI_MANIFEST, blob_path, sha256
from edgefleet.publisher.registry import RegistryClient

HOST = "registry.test"
REPO = "acme/sensor"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class Documents:
    """Manifests and blobs by digest, served as a distribution registry serves them."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}

    def blob(self, data: bytes, media_type: str) -> dict[str, object]:
        self.blobs[sha256(data)] = data
        return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}

    def manifest(self, document: dict[str, object], media_type: str) -> dict[str, object]:
        body = json.dumps(document).encode()
        self.manifests[sha256(body)] = (media_type, body)
        return {"mediaType": media_type, "digest": sha256(body), "size": len(body)}

    def image(self, arch: str, *, os: str = "linux") -> dict[str, object]:
        config = self.blob(json.dumps({"architecture": arch, "os": os}).encode(), DOCKER_CONFIG)
        layers = [self.blob(f"{arch} layer {n}".encode(), DOCKER_LAYER) for n in range(2)]
        document = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config, "layers": layers}
        return self.manifest(document, DOCKER_MANIFEST)

    def handler(self, request: httpx.Request) -> httpx.Response:
        kind, _, digest = request.url.path.removeprefix(f"/v2/{REPO}/").partition("/")
        if kind == "manifests" and digest in self.manifests:
            media_type, body = self.manifests[digest]
            return httpx.Response(200, content=body, headers={"Content-Type": media_type})
        if kind == "blobs" and digest in self.blobs:
            return httpx.Response(200, content=self.blobs[digest])
        return httpx.Response(404)


def export(documents: Documents, digest: str, destination: Path) -> tuple[str, dict[str, bytes]]:
    image = f"{HOST}/{REPO}@{digest}"
    with RegistryClient(transport=httpx.MockTransport(documents.handler)) as client:
        client.export(image, destination)
    with tarfile.open(destination) as archive:
        return image, {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_a_single_image_is_listed_for_docker_tagged_by_its_digest(tmp_path: Path) -> None:
    documents = Documents()
    top = documents.image("arm64")
    image, files = export(documents, str(top["digest"]), tmp_path / "b.tar")
    manifest = json.loads(documents.manifests[str(top["digest"])][1])
    tag = f"sha256-{str(top['digest']).removeprefix('sha256:')}"
    assert json.loads(files["manifest.json"]) == [
        {
            "Config": blob_path(manifest["config"]["digest"]),
            "RepoTags": [f"{HOST}/{REPO}:{tag}"],
            "Layers": [blob_path(layer["digest"]) for layer in manifest["layers"]],
        }
    ]
    assert json.loads(files["repositories"]) == {f"{HOST}/{REPO}": {tag: manifest["layers"][-1]["digest"][7:]}}
    # The agent finds in it what manifest.json lists.
    assert find_image(tmp_path / "b.tar", image, arch="arm64").config == manifest["config"]["digest"]


def test_an_index_lists_each_linux_image_once_tagged_by_its_own_digest(tmp_path: Path) -> None:
    documents = Documents()
    entries = {arch: documents.image(arch) for arch in ("amd64", "arm64")}
    windows = documents.image("amd64", os="windows")
    attestation = documents.manifest(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": documents.blob(b"{}", "application/vnd.oci.image.config.v1+json"),
            "layers": [documents.blob(b"{}", "application/vnd.in-toto+json")],
        },
        OCI_MANIFEST,
    )
    listed = [
        {**entries["amd64"], "platform": {"os": "linux", "architecture": "amd64"}},
        {**windows, "platform": {"os": "windows", "architecture": "amd64"}},
        {**entries["arm64"], "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {**attestation, "platform": {"os": "unknown", "architecture": "unknown"}},
    ]
    top = documents.manifest({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": listed}, DOCKER_LIST)

    image, files = export(documents, str(top["digest"]), tmp_path / "b.tar")

    docker = json.loads(files["manifest.json"])
    configs = {
        arch: json.loads(documents.manifests[str(entry["digest"])][1])["config"]["digest"]
        for arch, entry in entries.items()
    }
    # Docker would refuse the Windows image and the attestation, failing the whole load: they are left out.
    assert [entry["Config"] for entry in docker] == [blob_path(configs["amd64"]), blob_path(configs["arm64"])]
    assert [entry["RepoTags"] for entry in docker] == [
        [f"{HOST}/{REPO}:{str(entries[arch]['digest']).replace(':', '-')}"] for arch in ("amd64", "arm64")
    ]
    assert set(json.loads(files["repositories"])[f"{HOST}/{REPO}"]) == {
        str(entries[arch]["digest"]).replace(":", "-") for arch in ("amd64", "arm64")
    }
    for arch, config in configs.items():
        assert find_image(tmp_path / "b.tar", image, arch=arch).config == config


@pytest.mark.parametrize("name", ["busybox", "library/busybox", "acme/busybox"])
def test_docker_hub_names_are_written_short(tmp_path: Path, name: str) -> None:
    documents = Documents()
    top = documents.image("amd64")

    def hub(request: httpx.Request) -> httpx.Response:
        path = request.url.path.replace(f"/v2/{repo}/", f"/v2/{REPO}/")
        return documents.handler(httpx.Request(request.method, request.url.copy_with(path=path)))

    repo = name if "/" in name else f"library/{name}"
    with RegistryClient(transport=httpx.MockTransport(hub)) as client:
        client.export(f"{name}@{top['digest']}", tmp_path / "b.tar")
    with tarfile.open(tmp_path / "b.tar") as archive:
        docker = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    short = name.removeprefix("library/")
    assert docker[0]["RepoTags"] == [f"{short}:{str(top['digest']).replace(':', '-')}"]
