"""Images for bundle tests: multi-architecture busybox in the registry, bundles as `release build --bundle` writes
them (and as earlier releases wrote them), what an image's config digest is, and removing what a test loaded."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import docker

from edgefleet.publisher.registry import RegistryClient
from tests.integration.agent.conftest import busybox_layer
from tests.integration.registry.conftest import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, Registry

REPO = "edgefleet-test/busybox"


def push_multi_arch(registry: Registry, marker: str) -> str:
    """An index of a runnable amd64 busybox, an arm64 one and a build attestation; returns it pinned by digest."""
    entries = []
    for arch in ("amd64", "arm64"):
        layer, diff_id = busybox_layer(f"{marker} {arch}")
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        layers = [registry.push_blob(REPO, layer, OCI_LAYER)]
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": registry.push_blob(REPO, json.dumps(config).encode(), OCI_CONFIG),
                "layers": layers,
            }
        ).encode()
        descriptor = registry.push_manifest(REPO, f"{marker}-{arch}", body, OCI_MANIFEST)
        entries.append({**descriptor, "platform": {"architecture": arch, "os": "linux"}})
    entries.append(registry.push_attestation(REPO, entries[0]))
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    index = registry.push_manifest(REPO, marker, body, OCI_INDEX)
    return f"{registry.host}/{REPO}@{index['digest']}"


def document(registry: Registry, image: str) -> dict[str, Any]:
    """The manifest or index `image` (in `registry`, pinned by digest) names."""
    name, _, digest = image.partition("@")
    accept = ", ".join((OCI_INDEX, OCI_MANIFEST))
    response = registry.http.get(
        f"{registry.url}/v2/{name.split('/', 1)[1]}/manifests/{digest}", headers={"Accept": accept}
    )
    found: dict[str, Any] = response.json()
    return found


def configs(registry: Registry, image: str) -> dict[str, str]:
    """Architecture -> config digest of each Linux image `image` names (one entry for a single image)."""
    name = image.partition("@")[0]
    top = document(registry, image)
    if "manifests" not in top:
        config = registry.http.get(f"{registry.url}/v2/{name.split('/', 1)[1]}/blobs/{top['config']['digest']}").json()
        return {config["architecture"]: top["config"]["digest"]}
    found = {}
    for entry in top["manifests"]:
        if entry["platform"]["os"] == "linux":
            found.update(configs(registry, f"{name}@{entry['digest']}"))
    return found


def export(registry: Registry, image: str, destination: Path) -> Path:
    """The bundle `edgefleet release build --bundle` writes for `image`."""
    with RegistryClient(insecure=[registry.host]) as client:
        client.export(image, destination)
    return destination


def old_format(archive: Path, destination: Path) -> Path:
    """`archive` as releases were bundled before Docker's files were added: the OCI layout alone."""
    with tarfile.open(archive) as source, tarfile.open(destination, "w", format=tarfile.PAX_FORMAT) as copy:
        for member in source.getmembers():
            if member.name in ("manifest.json", "repositories"):
                continue
            data = source.extractfile(member) if member.isfile() else None
            copy.addfile(member, io.BytesIO(data.read()) if data else None)
    return destination


def members(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return set(tar.getnames())


def image_ids(client: docker.DockerClient) -> set[str]:
    return {str(image.id) for image in client.images.list(all=True)}


def forget(client: docker.DockerClient, *ids: str) -> None:
    """Remove the images with these IDs (and the containers made from them), whatever names they have."""
    for image_id in ids:
        for container in client.containers.list(all=True, filters={"ancestor": image_id}):
            container.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            client.images.remove(image_id, force=True)
